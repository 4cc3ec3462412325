/** "a=1&b=2" -> { a: "1", b: "2" }; keys and values are URL-decoded ("+" is a space). */
export function parseQuery(query: string): Record<string, string> {
  const decode = (part: string) => decodeURIComponent(part.replace(/\+/g, " "));
  const out: Record<string, string> = {};
  for (const pair of query.replace(/^\?/, "").split("&")) {
    if (!pair) continue;
    const at = pair.indexOf("=");
    const key = at < 0 ? pair : pair.slice(0, at);
    const value = at < 0 ? "" : pair.slice(at + 1);
    out[decode(key)] = decode(value);
  }
  return out;
}

/** "a=1&b=2" -> { a: "1", b: "2" }. */
export function parseQuery(query: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of query.replace(/^\?/, "").split("&")) {
    if (!pair) continue;
    const [key, value = ""] = pair.split("=");
    out[key] = value;
  }
  return out;
}

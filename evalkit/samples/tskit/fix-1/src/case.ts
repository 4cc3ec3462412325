/** "hello world" -> "helloWorld"; words split on spaces, hyphens and underscores. */
export function camelCase(text: string): string {
  const words = text.trim().split(/[\s_-]+/).filter(Boolean);
  return words
    .map((word, i) => (i === 0 ? word.toLowerCase() : word[0].toUpperCase() + word.slice(1).toLowerCase()))
    .join("");
}

/** "hello world" -> "helloWorld". */
export function camelCase(text: string): string {
  const words = text.trim().split(" ");
  return words
    .map((word, i) => (i === 0 ? word.toLowerCase() : word[0].toUpperCase() + word.slice(1).toLowerCase()))
    .join("");
}

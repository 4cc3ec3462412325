/** The numbers from start (inclusive) to end (exclusive), step apart. */
export function range(start: number, end: number, step = 1): number[] {
  const out: number[] = [];
  for (let n = start; n < end; n += step) out.push(n);
  return out;
}

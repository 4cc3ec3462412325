/** The numbers from start (inclusive) to end (exclusive), step apart; step may be negative. */
export function range(start: number, end: number, step = 1): number[] {
  if (step === 0 || !Number.isFinite(step)) throw new RangeError(`bad step ${step}`);
  const out: number[] = [];
  for (let n = start; step > 0 ? n < end : n > end; n += step) out.push(n);
  return out;
}

// Number formatting for the control room: stable, locale-independent output
// so screenshots and tests read the same everywhere.

/** 1234567 -> "1,234,567". */
export function count(n: number): string {
  const whole = Math.round(n);
  const sign = whole < 0 ? "-" : "";
  return sign + Math.abs(whole).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Seconds with a unit that fits: "850 µs", "42.0 ms", "3.214 s", "2 min 5 s". */
export function seconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "–";
  if (s < 0.001) return `${Math.round(s * 1e6)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(3)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

/** Bytes in decimal megabytes or gigabytes. */
export function bytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  return `${(n / 1e6).toFixed(1)} MB`;
}

/** A rate per second: "32.1 M/s", "193 k/s", "950 /s". */
export function rate(perSecond: number): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(1)} M/s`;
  if (perSecond >= 1e3) return `${Math.round(perSecond / 1e3)} k/s`;
  return `${Math.round(perSecond)} /s`;
}

// Press-and-hold for the fire button: the press must last HOLD_MS with the
// pointer on the button. Releasing or leaving early cancels it. This is the
// deliberate confirmation (see README: why hold rather than typing).

export const HOLD_MS = 1000;

export class Hold {
  private started: number | null = null;

  constructor(private readonly holdMs = HOLD_MS) {}

  /** The pointer went down on the button. Ignored unless `enabled`. */
  press(now: number, enabled: boolean): void {
    this.started = enabled ? now : null;
  }

  /** The pointer went up or left: cancel. */
  release(): void {
    this.started = null;
  }

  /** True while a press is held. */
  get holding(): boolean {
    return this.started !== null;
  }

  /** Progress in [0, 1]; `fire` is true exactly once, when the hold completes. */
  tick(now: number): { progress: number; fire: boolean } {
    if (this.started === null) return { progress: 0, fire: false };
    const progress = Math.min(1, Math.max(0, (now - this.started) / this.holdMs));
    if (progress >= 1) {
      this.started = null;
      return { progress: 1, fire: true };
    }
    return { progress, fire: false };
  }
}

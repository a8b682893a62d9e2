import { describe, expect, it } from "vitest";
import { Hold } from "./hold";

describe("press-and-hold", () => {
  it("fires once, only after the full hold", () => {
    const h = new Hold(1000);
    h.press(0, true);
    expect(h.tick(500)).toEqual({ progress: 0.5, fire: false });
    expect(h.tick(999).fire).toBe(false);
    expect(h.tick(1000)).toEqual({ progress: 1, fire: true });
    expect(h.tick(1500)).toEqual({ progress: 0, fire: false });
    expect(h.holding).toBe(false);
  });

  it("cancels on release and ignores presses while disabled", () => {
    const h = new Hold(1000);
    h.press(0, true);
    h.release();
    expect(h.tick(2000).fire).toBe(false);
    h.press(0, false);
    expect(h.holding).toBe(false);
    expect(h.tick(5000).fire).toBe(false);
  });
});

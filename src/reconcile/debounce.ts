// docker-gen's min:max debounce. Each trigger restarts the min timer; the max timer starts with the first trigger
// of a burst and is never reset, so a steady stream of events still reconciles at least every `maxMs`.
import type { DebounceWindow } from '../config.ts';
import type { Clock, TimerHandle } from './clock.ts';

export class Debouncer {
  private readonly window: DebounceWindow;
  private readonly clock: Clock;
  private readonly fire: () => void;
  private minTimer: TimerHandle | null = null;
  private maxTimer: TimerHandle | null = null;

  constructor(window: DebounceWindow, clock: Clock, fire: () => void) {
    this.window = window;
    this.clock = clock;
    this.fire = fire;
  }

  trigger(): void {
    if (this.window.maxMs === 0) return this.flush();
    this.minTimer?.cancel();
    this.minTimer = this.clock.setTimer(this.window.minMs, () => this.flush());
    this.maxTimer ??= this.clock.setTimer(this.window.maxMs, () => this.flush());
  }

  /** Fire now and end the burst. */
  flush(): void {
    this.cancel();
    this.fire();
  }

  cancel(): void {
    this.minTimer?.cancel();
    this.maxTimer?.cancel();
    this.minTimer = null;
    this.maxTimer = null;
  }

  get pending(): boolean {
    return this.minTimer !== null;
  }
}

// The only file importing p-queue.
// SingleFlight: one reconcile runs at a time; while it runs, any number of requests collapse into one more run,
// which re-lists everything and so sees the latest state ("latest wins").
// BoundedQueue: at most N jobs at once (ACME orders).
import PQueue from 'p-queue';

export class SingleFlight {
  private readonly queue = new PQueue({ concurrency: 1 });
  private readonly task: () => Promise<void>;
  private waiting: Promise<void> | null = null;

  constructor(task: () => Promise<void>) {
    this.task = task;
  }

  /** Resolves when a run that started after this call has finished. */
  request(): Promise<void> {
    if (this.waiting) return this.waiting;
    // p-queue may start the job inside add(), before `run` is assigned: the flag tells whether it is still waiting.
    let started = false;
    const run = this.queue.add(async () => {
      started = true;
      this.waiting = null;
      await this.task();
    });
    if (!started) this.waiting = run;
    return run;
  }

  onIdle(): Promise<void> {
    return this.queue.onIdle();
  }
}

export class BoundedQueue {
  private readonly queue: PQueue;

  constructor(concurrency: number) {
    this.queue = new PQueue({ concurrency });
  }

  add(job: () => Promise<void>): Promise<void> {
    return this.queue.add(job);
  }

  onIdle(): Promise<void> {
    return this.queue.onIdle();
  }

  clear(): void {
    this.queue.clear();
  }
}

// Prometheus text exposition, written by hand: a handful of counters, gauges and histograms does not need a library.

export class Histogram {
  readonly buckets: readonly number[];
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(buckets: readonly number[]) {
    this.buckets = [...buckets].sort((a, b) => a - b);
    this.counts = this.buckets.map(() => 0);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    this.buckets.forEach((bound, index) => {
      if (value <= bound) this.counts[index] = (this.counts[index] ?? 0) + 1;
    });
  }

  lines(name: string): string[] {
    const lines = this.buckets.map(
      (bound, index) => `${name}_bucket{le="${bound}"} ${this.counts[index] ?? 0}`,
    );
    lines.push(
      `${name}_bucket{le="+Inf"} ${this.count}`,
      `${name}_sum ${round(this.sum)}`,
      `${name}_count ${this.count}`,
    );
    return lines;
  }
}

export type Labels = Readonly<Record<string, string>>;

/** One labelled histogram: counts per bucket (not cumulative, the last one is +Inf) and the sum of observations. */
export interface HistogramSeries {
  readonly labels: Labels;
  readonly counts: readonly number[];
  readonly sum: number;
}

/** Collects one scrape's worth of metrics. */
export class MetricsWriter {
  private readonly out: string[] = [];

  metric(
    name: string,
    type: 'counter' | 'gauge',
    help: string,
    samples: readonly (readonly [Labels, number])[],
  ): this {
    this.out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) this.out.push(`${name}${formatLabels(labels)} ${round(value)}`);
    return this;
  }

  histogram(name: string, help: string, histogram: Histogram): this {
    this.out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`, ...histogram.lines(name));
    return this;
  }

  /** Labelled histograms sharing bucket bounds; each series' counts have one more entry (+Inf) than `bounds`. */
  histograms(
    name: string,
    help: string,
    bounds: readonly number[],
    series: readonly HistogramSeries[],
  ): this {
    this.out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    for (const { labels, counts, sum } of series) {
      let cumulative = 0;
      bounds.forEach((bound, index) => {
        cumulative += counts[index] ?? 0;
        this.out.push(`${name}_bucket${withBound(labels, String(bound))} ${round(cumulative)}`);
      });
      cumulative += counts[bounds.length] ?? 0;
      this.out.push(
        `${name}_bucket${withBound(labels, '+Inf')} ${round(cumulative)}`,
        `${name}_sum${formatLabels(labels)} ${round(sum)}`,
        `${name}_count${formatLabels(labels)} ${round(cumulative)}`,
      );
    }
    return this;
  }

  text(): string {
    return `${this.out.join('\n')}\n`;
  }
}

function formatLabels(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '';
  return `{${keys.map((key) => `${key}="${(labels[key] ?? '').replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

/** The series' labels with `le` last, as Prometheus' own clients write it. */
function withBound(labels: Labels, bound: string): string {
  const base = formatLabels(labels);
  return base === '' ? `{le="${bound}"}` : `${base.slice(0, -1)},le="${bound}"}`;
}

function round(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(6).replace(/0+$/, '').replace(/\.$/, '');
}

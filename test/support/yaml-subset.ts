// A strict parser for the YAML subset examples/prometheus-alerts.yml is written in: block mappings, block sequences
// of mappings, plain and quoted scalars, literal blocks (|) and full-line comments. Anything else is an error with
// its line number, so a file that drifts out of the subset fails its test instead of being half read. (No YAML
// package is a dependency; Prometheus' own `promtool check rules` is the final word where it is installed.)

export type YamlValue = string | YamlValue[] | { [key: string]: YamlValue };

interface Line {
  readonly number: number;
  readonly indent: number;
  readonly text: string;
}

export function parseYamlSubset(source: string): YamlValue {
  const lines: Line[] = [];
  source.split('\n').forEach((raw, index) => {
    if (/^\s*(#.*)?$/.test(raw)) return;
    if (/^ *\t/.test(raw)) throw new Error(`line ${index + 1}: tab in indentation`);
    const indent = raw.length - raw.trimStart().length;
    lines.push({ number: index + 1, indent, text: raw.trimEnd().slice(indent) });
  });
  let at = 0;
  const rawLines = source.split('\n');

  function scalar(text: string, line: Line): string {
    if (text.startsWith("'")) {
      if (!/^'(?:[^']|'')*'$/.test(text)) throw new Error(`line ${line.number}: unterminated single quote`);
      return text.slice(1, -1).replace(/''/g, "'");
    }
    if (text.startsWith('"')) return JSON.parse(text) as string;
    if (/^[[{&*!%@`|>]/.test(text) || / #/.test(text) || /: /.test(text)) {
      throw new Error(`line ${line.number}: "${text}" is outside the subset (quote it)`);
    }
    return text;
  }

  function literal(parentIndent: number, keep: boolean): string {
    const start = lines[at]?.number ?? rawLines.length + 1;
    const body: string[] = [];
    while (at < lines.length && (lines[at]?.indent ?? 0) > parentIndent) at++;
    const end = lines[at]?.number ?? rawLines.length + 1;
    for (let n = start; n < end; n++) body.push(rawLines[n - 1] ?? '');
    while (body.length > 0 && (body.at(-1) ?? '').trim() === '') body.pop();
    const common = Math.min(
      ...body.filter((l) => l.trim() !== '').map((l) => l.length - l.trimStart().length),
    );
    const text = body.map((l) => l.slice(common)).join('\n');
    return keep ? `${text}\n` : text;
  }

  function block(indent: number): YamlValue {
    const first = lines[at];
    if (!first || first.indent !== indent)
      throw new Error(`line ${first?.number ?? '?'}: expected indent ${indent}`);
    return first.text.startsWith('- ') ? sequence(indent) : mapping(indent);
  }

  function mapping(indent: number, inlineFirst?: string): { [key: string]: YamlValue } {
    const result: { [key: string]: YamlValue } = {};
    let pending = inlineFirst;
    for (;;) {
      const line = lines[at];
      let text: string;
      if (pending !== undefined) {
        text = pending;
        pending = undefined;
      } else {
        if (!line || line.indent !== indent || line.text.startsWith('- ')) break;
        text = line.text;
      }
      const current = lines[at] as Line;
      at++;
      const match = /^([A-Za-z_][A-Za-z0-9_-]*):(?: (.*))?$/.exec(text);
      if (!match) throw new Error(`line ${current.number}: expected "key: value", got "${text}"`);
      const key = match[1] ?? '';
      if (key in result) throw new Error(`line ${current.number}: duplicate key ${key}`);
      const rest = (match[2] ?? '').trim();
      if (rest === '') {
        const next = lines[at];
        if (!next || next.indent <= indent) throw new Error(`line ${current.number}: ${key} has no value`);
        result[key] = block(next.indent);
      } else if (rest === '|' || rest === '|-') {
        result[key] = literal(indent, rest === '|');
      } else result[key] = scalar(rest, current);
      if (lines[at] && (lines[at]?.indent ?? 0) > indent && !(lines[at]?.text.startsWith('- ') ?? false)) {
        throw new Error(`line ${lines[at]?.number}: unexpected indentation`);
      }
    }
    return result;
  }

  function sequence(indent: number): YamlValue[] {
    const items: YamlValue[] = [];
    while (lines[at]?.indent === indent && lines[at]?.text.startsWith('- ')) {
      const line = lines[at] as Line;
      const content = line.text.slice(2);
      if (/^[A-Za-z_][A-Za-z0-9_-]*:( |$)/.test(content)) items.push(mapping(indent + 2, content));
      else {
        items.push(scalar(content, line));
        at++;
      }
    }
    return items;
  }

  const value = block(lines[0]?.indent ?? 0);
  if (at < lines.length) throw new Error(`line ${lines[at]?.number}: unexpected content`);
  return value;
}

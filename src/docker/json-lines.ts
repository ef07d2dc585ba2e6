// The event stream is one JSON object per line, but a chunk may hold several lines or part of one.

export async function* splitJsonLines(chunks: AsyncIterable<Buffer | string>): AsyncIterable<unknown> {
  let buffered = '';
  for await (const chunk of chunks) {
    buffered += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line !== '') yield JSON.parse(line) as unknown;
    }
  }
  if (buffered.trim() !== '') yield JSON.parse(buffered) as unknown;
}

/**
 * The text of a response's body, read no further than `limit` bytes: `undefined` when it is longer (by its
 * Content-Length or as it streams in), and then the rest is not read.
 */
export async function readBody(response: Response, limit: number): Promise<string | undefined> {
  const declared = Number(response.headers.get('content-length'));
  if (declared > limit) {
    // Not awaited: a stream's cancel may wait on its source, and we are done with this response either way.
    response.body?.cancel().catch(() => undefined);
    return undefined;
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  // Decoded as it streams in (a character split between chunks is held back until its end comes).
  const decoder = new TextDecoder();
  let text = '';
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text + decoder.decode();
    size += value.byteLength;
    if (size > limit) {
      reader.cancel().catch(() => undefined);
      return undefined;
    }
    text += decoder.decode(value, { stream: true });
  }
}

import { isLoopbackHostname } from '@tokenrelay/core/kit';

/**
 * True when `url` is an absolute http(s) URL whose host is a loopback address (`localhost`,
 * `127.0.0.0/8` or `[::1]`).
 *
 * @example
 * ```ts
 * isLoopbackUrl(server.url) // true
 * isLoopbackUrl('https://api.example.com') // false
 * ```
 */
export function isLoopbackUrl(url: string | URL): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  return (parsed.protocol === 'http:' || parsed.protocol === 'https:') && isLoopbackHostname(parsed.hostname);
}

/**
 * Wraps a fetch so that it refuses (rejects with a `TypeError`, before any traffic) every URL
 * that is not on loopback: a test that accidentally reaches for a real host fails loudly instead
 * of sending tokens to it.
 *
 * @param fetchImpl The fetch to wrap. @default globalThis.fetch, looked up at call time (so msw and other interceptors still apply)
 * @example
 * ```ts
 * const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [server.url] })
 * ```
 */
export function loopbackOnlyFetch(fetchImpl?: typeof fetch): typeof fetch {
  return (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    if (!isLoopbackUrl(url)) {
      // Only the origin: the path or query could carry a secret.
      const where = URL.canParse(url) ? new URL(url).origin : 'a relative or invalid URL';
      return Promise.reject(new TypeError(`loopbackOnlyFetch: refusing a request to ${where}, which is not a loopback host`));
    }
    return (fetchImpl ?? globalThis.fetch)(input, init);
  };
}

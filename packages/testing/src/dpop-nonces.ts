import { opaqueToken } from './token-registry.js';

/**
 * The server's current DPoP nonce (RFC 9449 §8, §9): one for the whole origin, token endpoint and API
 * alike. Only the current nonce is accepted, so a rotation makes every nonce a client holds stale at once.
 */
export class DpopNonces {
  readonly #rotateEveryMs: number | undefined;
  #nonce = opaqueToken();
  #issuedAt = Date.now();

  /** `rotateEveryMs`: a new nonce once the current one is that old; `undefined`: only {@link rotate} changes it. */
  constructor(rotateEveryMs: number | undefined) {
    this.#rotateEveryMs = rotateEveryMs;
  }

  /** The nonce a proof must carry at `now` (rotating first when it is due). */
  current(now: number): string {
    if (this.#rotateEveryMs !== undefined && now - this.#issuedAt >= this.#rotateEveryMs) this.rotate(now);
    return this.#nonce;
  }

  rotate(now = Date.now()): void {
    this.#nonce = opaqueToken();
    this.#issuedAt = now;
  }
}

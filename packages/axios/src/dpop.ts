/*
 * attachDpop: DPoP proofs (RFC 9449) on an axios instance's requests, whatever its transport (Node's
 * http adapter, xhr, fetch). A step goes in front of the instance's transport, so every attempt is
 * signed as it is sent, after every interceptor: with the `Authorization` attachTokenRelay set, a
 * replay included.
 */
import { configurationError, type DpopSender } from '@tokenrelay/core/kit';
import { isAxiosError, type AxiosInstance, type AxiosResponse } from 'axios';
import { failedResponse } from './response.js';
import { hasInstanceStep, putInFrontOfInstance, requireGetAdapter, type TransportStep } from './transport.js';

/** One attempt's outcome: the response, and the error axios rejected with when its status failed `validateStatus`. */
interface Attempt {
  readonly response: AxiosResponse;
  readonly error?: unknown;
}

/**
 * Puts a fresh DPoP proof on every request of `instance` (header `DPoP`), with `ath` when the request
 * carries `Authorization: DPoP <token>`, and the origin's nonce from the same nonce book as `dpop.fetch`.
 * A nonce challenge (a 401 `DPoP error="use_dpop_nonce"`, a 400 `use_dpop_nonce`) is sent once more
 * with a new proof, unless the body is a stream; it never reaches attachTokenRelay as a 401.
 *
 * Works with any transport (its step goes in front of `instance.defaults.adapter`), and with
 * {@link attachTokenRelay} in either order. A request that names its own `adapter` bypasses it.
 *
 * @param dpop what `createDpop()` of `@tokenrelay/dpop` returns
 * @returns `detach`, which takes its step off the instance's adapter; calling it again does nothing.
 * @throws TokenRelayError `CONFIGURATION_ERROR` with axios older than 1.6 (no `axios.getAdapter`), or when
 *   `instance` already has DPoP attached.
 * @example
 * ```ts
 * const dpop = createDpop()
 * const api = axios.create({ baseURL: 'https://api.example.com' })
 * attachTokenRelay(api, manager)
 * attachDpop(api, dpop)
 * ```
 */
export function attachDpop(instance: AxiosInstance, dpop: DpopSender): () => void {
  requireGetAdapter('attachDpop');
  // Twice would sign every attempt twice and retry a nonce challenge at both levels (attachDpop's step is the only instance step).
  if (hasInstanceStep(instance)) throw configurationError('attachDpop: this axios instance already has DPoP attached');
  const sign: TransportStep = async (config, transport) => {
    const url = instance.getUri(config);
    const { response, error } = await dpop.send<Attempt>({
      method: config.method ?? 'get',
      url,
      authorization: config.headers.get('Authorization')?.toString(),
      body: config.data,
      attempt: (proof) => {
        config.headers.set('DPoP', proof);
        return transport(config).then(
          (sent) => ({ response: sent }),
          (failed: unknown) => {
            if (isAxiosError(failed) && failed.response) return { response: failed.response, error: failed };
            throw failed;
          },
        );
      },
      answerOf: ({ response: answer }) => failedResponse(answer, url),
      // A streamed answer (responseType 'stream') that the retry replaces is let go, freeing its socket.
      discard: ({ response: answer }) => (answer.data as { destroy?: () => void } | null | undefined)?.destroy?.(),
    });
    if (error !== undefined) throw error;
    return response;
  };
  return putInFrontOfInstance(instance, sign);
}

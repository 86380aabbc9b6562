/*
 * What the axios door does at axios's transport (the adapter that sends a request): the one way to
 * put a step of ours in front of it, on one request (the waiting and the queue: it runs for that
 * request alone, and a newer one takes its place) or on the instance (DPoP: until it is taken off).
 */
import { configurationError } from '@tokenrelay/core/kit';
import axios, {
  type AxiosAdapter,
  type AxiosInstance,
  type AxiosRequestConfig,
  type AxiosResponse,
  type InternalAxiosRequestConfig,
} from 'axios';

/** Fails at attach time when this axios cannot resolve its transport (`axios.getAdapter`, axios 1.6+). */
export function requireGetAdapter(what: string): void {
  if (typeof axios.getAdapter !== 'function') throw configurationError(`${what} needs axios 1.6 or later (axios.getAdapter)`);
}

/** An adapter as axios takes it: a name (`'http'`), a list (`['xhr', 'http', 'fetch']`) or a function. */
type AdapterSetting = AxiosRequestConfig['adapter'];

/** The transport `adapter` names for `config`, as axios resolves it. */
function transportOf(adapter: AdapterSetting, config: InternalAxiosRequestConfig): AxiosAdapter {
  return axios.getAdapter(adapter, config);
}

/** A step in front of a transport: it gets the request and the transport to send it on (the real one, or the next step). */
export type TransportStep = (config: InternalAxiosRequestConfig, transport: AxiosAdapter) => Promise<AxiosResponse>;

/** What the adapter a step put on one request wraps, by that adapter: a replay or a copy of the request carries it. */
const requestStepWraps = new WeakMap<AxiosAdapter, AdapterSetting>();

/**
 * Puts `step` in front of this request's transport (its config's adapter, else `instanceAdapter`,
 * else axios's global default, as axios's own dispatch falls back): axios calls it where it would
 * call its adapter, after every interceptor and transform. It runs for this config only: a replay
 * or a copy carries the adapter, but axios makes a new config for every request, and that one goes
 * straight on, to wait or queue only if that is decided anew, by a step that takes this one's place.
 */
export function putInFrontOfRequest(config: InternalAxiosRequestConfig, step: TransportStep, instanceAdapter: AdapterSetting): void {
  const current = config.adapter ?? instanceAdapter ?? axios.defaults.adapter;
  // Steps never stack: this is the one place that puts a request step, and it always takes the earlier one off.
  const wraps = typeof current === 'function' && requestStepWraps.has(current) ? requestStepWraps.get(current) : current;
  const adapter: AxiosAdapter = (sent) => (sent === config ? step(sent, transportOf(wraps, sent)) : transportOf(wraps, sent)(sent));
  requestStepWraps.set(adapter, wraps);
  config.adapter = adapter;
}

/** The adapters putInFrontOfInstance put on an instance. */
const instanceStepAdapters = new WeakSet<AxiosAdapter>();

/**
 * Puts `step` in front of the transport of every request of `instance` that does not name its own
 * adapter, whichever step a request gets later.
 * @returns what takes the step off again, putting back the adapter it wrapped, unless the instance's
 *   adapter was replaced meanwhile (then that one stays); calling it again does nothing.
 */
export function putInFrontOfInstance(instance: AxiosInstance, step: TransportStep): () => void {
  const wraps = instance.defaults.adapter;
  const adapter: AxiosAdapter = (config) => step(config, transportOf(wraps, config));
  instanceStepAdapters.add(adapter);
  instance.defaults.adapter = adapter;
  return () => {
    if (instance.defaults.adapter === adapter) instance.defaults.adapter = wraps;
  };
}

/** Whether a step putInFrontOfInstance put on is in front of `instance`'s transport. */
export function hasInstanceStep(instance: AxiosInstance): boolean {
  const adapter = instance.defaults.adapter;
  return typeof adapter === 'function' && instanceStepAdapters.has(adapter);
}

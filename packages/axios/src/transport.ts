/*
 * What the axios door does at axios's transport (the adapter that sends a request): the one way to
 * put a step of ours in front of it, on one request (the waiting and the queue: it runs for that
 * request alone, and a newer one takes its place) or on the instance (DPoP: until it is taken off).
 * Each adapter of ours records what it wraps under one symbol, so the steps form one chain.
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

/** What an adapter of ours records: its step, the adapter it is in front of, and the one request it was put on, if any. */
interface Link {
  readonly step: TransportStep;
  readonly wraps: AdapterSetting;
  readonly request: InternalAxiosRequestConfig | undefined;
}

const linkKey: unique symbol = Symbol('tokenrelay.axios.step');
type StepAdapter = AxiosAdapter & { readonly [linkKey]?: Link };

function linkOf(adapter: AdapterSetting): Link | undefined {
  return typeof adapter === 'function' ? (adapter as StepAdapter)[linkKey] : undefined;
}

/**
 * `step` in front of `wraps`. A step put on one request runs for that request only: a replay, or a
 * copy, carries the adapter, but axios makes a new config for every request, and that one goes
 * straight on, to wait or queue only if that is decided anew (by a step of its own).
 */
function inFront(step: TransportStep, wraps: AdapterSetting, request?: InternalAxiosRequestConfig): AxiosAdapter {
  const link: Link = { step, wraps, request };
  const adapter = (config: InternalAxiosRequestConfig) =>
    request === undefined || config === request ? step(config, transportOf(wraps, config)) : transportOf(wraps, config)(config);
  return Object.assign(adapter, { [linkKey]: link });
}

/** `adapter` without the steps put on one request in front of it; the steps of the instance stay. */
function withoutRequestSteps(adapter: AdapterSetting): AdapterSetting {
  // A finite chain: each link wraps an adapter that existed before it.
  for (let link = linkOf(adapter); link?.request; link = linkOf(link.wraps)) adapter = link.wraps;
  return adapter;
}

/**
 * Puts `step` in front of this request's transport (its config's adapter, else `instanceAdapter`,
 * else axios's global default, as axios's own dispatch falls back): axios calls it where it would
 * call its adapter, after every interceptor and transform. It takes the place of a step an earlier
 * send left (a replay, a copy): steps never stack.
 */
export function putInFrontOfRequest(config: InternalAxiosRequestConfig, step: TransportStep, instanceAdapter: AdapterSetting): void {
  config.adapter = inFront(step, withoutRequestSteps(config.adapter ?? instanceAdapter ?? axios.defaults.adapter), config);
}

/**
 * Puts `step` in front of the transport of every request of `instance` that does not name its own
 * adapter, whichever steps a request gets later.
 * @returns what takes the step off again, wherever it sits by then; calling it again does nothing.
 */
export function putInFrontOfInstance(instance: AxiosInstance, step: TransportStep): () => void {
  instance.defaults.adapter = inFront(step, instance.defaults.adapter);
  return () => {
    instance.defaults.adapter = withoutStep(instance.defaults.adapter, step);
  };
}

/** `adapter` without `step`: the same adapter when `step` is not in its chain, else its links rebuilt around the gap. */
function withoutStep(adapter: AdapterSetting, step: TransportStep): AdapterSetting {
  const link = linkOf(adapter);
  if (link === undefined) return adapter;
  if (link.step === step) return link.wraps;
  const wraps = withoutStep(link.wraps, step);
  return wraps === link.wraps ? adapter : inFront(link.step, wraps, link.request);
}

/** Whether a step that `isStep` recognizes is in front of `adapter`'s transport. */
export function hasStep(adapter: AdapterSetting, isStep: (step: TransportStep) => boolean): boolean {
  // A finite chain: each link wraps an adapter that existed before it.
  for (let link = linkOf(adapter); link; link = linkOf(link.wraps)) if (isStep(link.step)) return true;
  return false;
}

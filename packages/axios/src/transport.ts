/*
 * What the axios door does at axios's transport (the adapter that sends a request): the one way
 * to put a step of ours in front of it, for the waiting and the queue (one request's) and for DPoP
 * (the instance's), and to take such steps off again.
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

/** What an adapter of ours records: its step, the adapter it is in front of, and whether it was put on one request only. */
interface Link {
  readonly step: TransportStep;
  readonly wraps: AdapterSetting;
  readonly oneRequest: boolean;
}

const linkKey: unique symbol = Symbol('tokenrelay.axios.step');
type StepAdapter = AxiosAdapter & { readonly [linkKey]?: Link };

function linkOf(adapter: AdapterSetting): Link | undefined {
  return typeof adapter === 'function' ? (adapter as StepAdapter)[linkKey] : undefined;
}

function inFront(step: TransportStep, wraps: AdapterSetting, oneRequest: boolean): AxiosAdapter {
  const link: Link = { step, wraps, oneRequest };
  return Object.assign((config: InternalAxiosRequestConfig) => step(config, transportOf(wraps, config)), { [linkKey]: link });
}

/**
 * Puts `step` in front of this request's transport (its config's adapter, else `instanceAdapter`):
 * axios calls it where it would call its adapter, after every interceptor and transform.
 */
export function putInFrontOfRequest(config: InternalAxiosRequestConfig, step: TransportStep, instanceAdapter: AdapterSetting): void {
  config.adapter = inFront(step, config.adapter ?? instanceAdapter, true);
}

/**
 * Takes off the steps an earlier send put on this request: a replay, or a copy of a request,
 * carries them, and must wait or queue only if that is decided anew. Steps of the instance stay.
 */
export function takeRequestStepsOff(config: InternalAxiosRequestConfig): void {
  // A finite chain: each link wraps an adapter that existed before it.
  for (let link = linkOf(config.adapter); link?.oneRequest; link = linkOf(link.wraps)) config.adapter = link.wraps;
}

/**
 * Puts `step` in front of the transport of every request of `instance` that does not name its own
 * adapter, whichever steps a request gets later.
 * @returns what takes the step off again, wherever it sits by then; calling it again does nothing.
 */
export function putInFrontOfInstance(instance: AxiosInstance, step: TransportStep): () => void {
  instance.defaults.adapter = inFront(step, instance.defaults.adapter, false);
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
  return wraps === link.wraps ? adapter : inFront(link.step, wraps, link.oneRequest);
}

/** Whether a step that `isStep` recognizes is in front of `adapter`'s transport. */
export function hasStep(adapter: AdapterSetting, isStep: (step: TransportStep) => boolean): boolean {
  // A finite chain: each link wraps an adapter that existed before it.
  for (let link = linkOf(adapter); link; link = linkOf(link.wraps)) if (isStep(link.step)) return true;
  return false;
}

/*
 * What the axios door does at axios's transport (the adapter that sends a request): resolving it as
 * axios would, for the queue and for DPoP, which both wrap it.
 */
import { configurationError } from '@tokenrelay/core/kit';
import axios, { type AxiosAdapter, type AxiosRequestConfig, type InternalAxiosRequestConfig } from 'axios';

/** Fails at attach time when this axios cannot resolve its transport (`axios.getAdapter`, axios 1.6+). */
export function requireGetAdapter(what: string): void {
  if (typeof axios.getAdapter !== 'function') throw configurationError(`${what} needs axios 1.6 or later (axios.getAdapter)`);
}

/** The transport `adapter` names (`'http'`, `['xhr', 'http', 'fetch']`, a function) for `config`, as axios resolves it. */
export function transportOf(adapter: AxiosRequestConfig['adapter'], config: InternalAxiosRequestConfig): AxiosAdapter {
  return axios.getAdapter(adapter, config);
}

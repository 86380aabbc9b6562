import axios, { type AxiosAdapter, type InternalAxiosRequestConfig } from 'axios';
import { describe, expect, it } from 'vitest';
import { hasStep, putInFrontOfInstance, putInFrontOfRequest, type TransportStep } from './transport.js';

/** A transport, and steps named by what they log, all writing to one log in the order they run. */
function recorder() {
  const log: string[] = [];
  const transport: AxiosAdapter = async (config) => {
    log.push('transport');
    return { data: 'ok', status: 200, statusText: 'OK', headers: {}, config };
  };
  const step =
    (name: string): TransportStep =>
    (config, next) => {
      log.push(name);
      return next(config);
    };
  return { log, transport, step };
}

/** The config axios hands to the transform steps and the adapter of a request to `instance`. */
function requestConfig(adapter: InternalAxiosRequestConfig['adapter']): InternalAxiosRequestConfig {
  return { adapter, headers: new axios.AxiosHeaders(), url: '/me' };
}

async function send(config: InternalAxiosRequestConfig) {
  const adapter = config.adapter;
  if (typeof adapter !== 'function') throw new TypeError('expected a function adapter');
  return adapter(config);
}

describe('transport steps', () => {
  it("runs a request's step before the instance's, each once, before the transport", async () => {
    const { log, transport, step } = recorder();
    const instance = axios.create({ adapter: transport });
    putInFrontOfInstance(instance, step('instance'));
    const config = requestConfig(instance.defaults.adapter);
    putInFrontOfRequest(config, step('request'), instance.defaults.adapter);

    await send(config);

    expect(log).toEqual(['request', 'instance', 'transport']);
  });

  it("runs a request's step for that request only: a replay or a copy (a new config, as axios makes) goes on through the instance's", async () => {
    const { log, transport, step } = recorder();
    const instance = axios.create({ adapter: transport });
    putInFrontOfInstance(instance, step('instance'));
    const config = requestConfig(instance.defaults.adapter);
    putInFrontOfRequest(config, step('first send'), instance.defaults.adapter);

    await send({ ...config });

    expect(log).toEqual(['instance', 'transport']);
  });

  it("puts a replay's step in place of the one its first send left, so steps never stack", async () => {
    const { log, transport, step } = recorder();
    const instance = axios.create({ adapter: transport });
    putInFrontOfInstance(instance, step('instance'));
    const config = requestConfig(instance.defaults.adapter);
    const firstSend = step('first send');
    putInFrontOfRequest(config, firstSend, instance.defaults.adapter);

    const replay = { ...config };
    putInFrontOfRequest(replay, step('replay'), instance.defaults.adapter);
    await send(replay);

    expect(log).toEqual(['replay', 'instance', 'transport']);
    expect(hasStep(replay.adapter, (candidate) => candidate === firstSend)).toBe(false);
  });

  it('puts a request step in front of the instance adapter when the request names none, resolved as axios does', async () => {
    const { log, transport, step } = recorder();
    const config = requestConfig(undefined);
    putInFrontOfRequest(config, step('request'), transport);

    await send(config);

    expect(log).toEqual(['request', 'transport']);
  });

  it('takes an instance step off wherever it sits, keeping the others, and a second take-off does nothing', async () => {
    const { log, transport, step } = recorder();
    const instance = axios.create({ adapter: transport });
    const inner = step('inner');
    const takeInnerOff = putInFrontOfInstance(instance, inner);
    const takeOuterOff = putInFrontOfInstance(instance, step('outer'));

    takeInnerOff();
    takeInnerOff();
    expect(hasStep(instance.defaults.adapter, (candidate) => candidate === inner)).toBe(false);
    await send(requestConfig(instance.defaults.adapter));
    takeOuterOff();

    expect(log).toEqual(['outer', 'transport']);
    expect(instance.defaults.adapter).toBe(transport);
  });

  it('finds a step anywhere in front of a transport, and none in front of a name or list axios resolves', () => {
    const { transport, step } = recorder();
    const instance = axios.create({ adapter: transport });
    const inner = step('inner');
    putInFrontOfInstance(instance, inner);
    putInFrontOfInstance(instance, step('outer'));

    expect(hasStep(instance.defaults.adapter, (candidate) => candidate === inner)).toBe(true);
    expect(hasStep(['xhr', 'http', 'fetch'], () => true)).toBe(false);
    expect(hasStep('http', () => true)).toBe(false);
  });
});

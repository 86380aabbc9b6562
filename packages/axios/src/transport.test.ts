import axios, { type AxiosAdapter, type InternalAxiosRequestConfig } from 'axios';
import { describe, expect, it } from 'vitest';
import { hasInstanceStep, putInFrontOfInstance, putInFrontOfRequest, type TransportStep } from './transport.js';

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
    putInFrontOfRequest(config, step('first send'), instance.defaults.adapter);

    const replay = { ...config };
    putInFrontOfRequest(replay, step('replay'), instance.defaults.adapter);
    await send(replay);
    const replayOfReplay = { ...replay };
    putInFrontOfRequest(replayOfReplay, step('replay of replay'), instance.defaults.adapter);
    await send(replayOfReplay);

    expect(log).toEqual(['replay', 'instance', 'transport', 'replay of replay', 'instance', 'transport']);
  });

  it('puts a request step in front of the instance adapter when the request names none, resolved as axios does', async () => {
    const { log, transport, step } = recorder();
    const config = requestConfig(undefined);
    putInFrontOfRequest(config, step('request'), transport);

    await send(config);

    expect(log).toEqual(['request', 'transport']);
  });

  it("takes the instance step off, putting back the instance's adapter exactly, and a second take-off does nothing", async () => {
    const { log, transport, step } = recorder();
    const instance = axios.create({ adapter: transport });
    const takeOff = putInFrontOfInstance(instance, step('instance'));
    await send(requestConfig(instance.defaults.adapter));

    takeOff();
    expect(instance.defaults.adapter).toBe(transport);
    const again = putInFrontOfInstance(instance, step('again'));
    takeOff();
    await send(requestConfig(instance.defaults.adapter));
    again();

    expect(log).toEqual(['instance', 'transport', 'again', 'transport']);
    expect(instance.defaults.adapter).toBe(transport);
  });

  it('leaves an adapter that replaced the instance step meanwhile in place when the step is taken off', () => {
    const { transport, step } = recorder();
    const instance = axios.create({ adapter: transport });
    const takeOff = putInFrontOfInstance(instance, step('instance'));

    instance.defaults.adapter = 'fetch';
    takeOff();

    expect(instance.defaults.adapter).toBe('fetch');
  });

  it('tells whether an instance step is in front of the transport, and none in front of a name, a list or a request step', () => {
    const { transport, step } = recorder();
    const instance = axios.create({ adapter: transport });
    expect(hasInstanceStep(instance)).toBe(false);

    const takeOff = putInFrontOfInstance(instance, step('instance'));
    expect(hasInstanceStep(instance)).toBe(true);
    takeOff();
    expect(hasInstanceStep(instance)).toBe(false);

    const config = requestConfig(transport);
    putInFrontOfRequest(config, step('request'), transport);
    expect(hasInstanceStep(axios.create({ adapter: config.adapter }))).toBe(false);
    expect(hasInstanceStep(axios.create({ adapter: ['xhr', 'http', 'fetch'] }))).toBe(false);
    expect(hasInstanceStep(axios.create({ adapter: 'http' }))).toBe(false);
  });
});

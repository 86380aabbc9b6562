/*
 * oidc-provider 9 ships no type declarations. This declares the small part of its API the
 * interop tests use (test/helpers/oidc-server.ts), nothing more.
 */
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  /** A client registration (OpenID Connect Dynamic Client Registration metadata). */
  export interface ClientMetadata {
    client_id: string;
    client_secret?: string;
    token_endpoint_auth_method?: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';
    /** The client's public keys, for private_key_jwt. */
    jwks?: { keys: Array<Record<string, unknown>> };
    redirect_uris?: string[];
    grant_types?: string[];
    response_types?: string[];
    /** The client's access tokens must be DPoP-bound (RFC 9449 §5.2). */
    dpop_bound_access_tokens?: boolean;
  }

  /** What findAccount resolves to. */
  export interface Account {
    accountId: string;
    claims(): Promise<Record<string, unknown>> | Record<string, unknown>;
  }

  export interface Configuration {
    /** A factory of storage adapters, one per model (AccessToken, RefreshToken, Grant, …). */
    adapter?: (model: string) => unknown;
    clients?: ClientMetadata[];
    findAccount?: (ctx: unknown, id: string) => Promise<Account | undefined> | Account | undefined;
    jwks?: { keys: Array<Record<string, unknown>> };
    cookies?: { keys?: string[] };
    clientBasedCORS?: (ctx: unknown, origin: string, client: unknown) => boolean;
    rotateRefreshToken?: boolean | ((ctx: unknown) => boolean);
    issueRefreshToken?: (ctx: unknown, client: unknown, code: unknown) => boolean | Promise<boolean>;
    pkce?: { required?: (ctx: unknown, client: unknown) => boolean };
    ttl?: Record<string, number | ((ctx: unknown, token: unknown, client: unknown) => number)>;
    features?: {
      devInteractions?: { enabled: boolean };
      dPoP?: { enabled: boolean; nonceSecret?: Buffer; requireNonce?: (ctx: unknown) => boolean; allowReplay?: boolean };
      clientCredentials?: { enabled: boolean };
      introspection?: { enabled: boolean; allowedPolicy?: (ctx: unknown, client: unknown, token: unknown) => boolean };
      revocation?: { enabled: boolean; allowedPolicy?: (ctx: unknown, client: unknown, token: unknown) => boolean };
    };
  }

  export default class Provider {
    constructor(issuer: string, configuration?: Configuration);
    readonly issuer: string;
    /** A Node.js request listener (Provider extends Koa). */
    callback(): (request: IncomingMessage, response: ServerResponse) => void;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }
}

declare module 'oidc-provider/lib/adapters/memory_adapter.js' {
  /** The development in-memory adapter, over a store of its own: several providers given it share their state. */
  export function createMemoryAdapter(clockTolerance?: number): (model: string) => unknown;
}

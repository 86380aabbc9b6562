/*
 * The few framework APIs the docs' snippets use, for frameworks this repo does not install (Next.js
 * and NestJS are large). Copied from their public types (next 15, @nestjs/common 11), narrowed to
 * what the snippets call; check-doc-snippets.mjs compiles the snippets against these.
 */
declare module 'next/headers' {
  interface RequestCookie {
    name: string;
    value: string;
  }
  interface CookieOptions {
    httpOnly?: boolean;
    secure?: boolean;
    sameSite?: 'lax' | 'strict' | 'none';
    path?: string;
    maxAge?: number;
  }
  /** Next 15: readable everywhere on the server; `set`/`delete` throw outside Server Actions, Route Handlers and middleware. */
  interface Cookies {
    get(name: string): RequestCookie | undefined;
    set(name: string, value: string, options?: CookieOptions): unknown;
    delete(name: string): unknown;
  }
  export function cookies(): Promise<Cookies>;
}

declare module '@nestjs/common' {
  export function Injectable(): ClassDecorator;
  export interface OnModuleDestroy {
    onModuleDestroy(): unknown;
  }
}

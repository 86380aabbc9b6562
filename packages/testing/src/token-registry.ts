import { randomBytes } from 'node:crypto';

/** One sign-in: every access and refresh token descending from it (RFC 9700 calls it the grant). */
export interface GrantFamily {
  readonly clientId: string;
  /** Whom the tokens are for: the signed-in user, a JWT bearer `sub`, a client credentials "run as" user. */
  readonly subject: string;
  /** The scope granted at sign-in; refreshes may narrow it, never widen it. */
  readonly scope: readonly string[];
  revoked: boolean;
  /** DPoP: the thumbprint of the key the family's refresh tokens are bound to (public clients only). */
  dpopJkt: string | undefined;
}

interface AccessTokenEntry {
  readonly family: GrantFamily;
  readonly expiresAt: number;
  /** DPoP: the thumbprint of the key the access token is bound to (`cnf.jkt`); `undefined` for a Bearer token. */
  readonly dpopJkt: string | undefined;
  revoked: boolean;
}

export interface RefreshTokenEntry {
  readonly family: GrantFamily;
  readonly expiresAt: number | undefined;
  /** `rotated` once a refresh replaced it; presenting it again is a reuse. */
  state: 'active' | 'rotated';
}

export type AccessTokenCheck =
  | { valid: true; family: GrantFamily; dpopJkt: string | undefined }
  | { valid: false; reason: 'unknown' | 'expired' | 'revoked' };

export type RefreshTokenCheck =
  | { valid: true; entry: RefreshTokenEntry }
  | { valid: false; reason: 'unknown' | 'expired' | 'revoked' | 'rotated' | 'other_client'; entry?: RefreshTokenEntry };

/** 256 random bits, base64url: opaque and unguessable, like a real server's tokens. */
export const opaqueToken = (): string => randomBytes(32).toString('base64url');

/** Every token the server issued and what became of it. Time is passed in, so checks are exact. */
export class TokenRegistry {
  readonly #accessTokens = new Map<string, AccessTokenEntry>();
  readonly #refreshTokens = new Map<string, RefreshTokenEntry>();
  readonly #families = new Set<GrantFamily>();

  /**
   * Starts a family. With `limit`, at most that many live families per client and subject: the
   * oldest are revoked to make room (Salesforce's 5 token pairs per user and app). Returns how many.
   * A family is live while one of its tokens can still be used: a session that ended (its access
   * tokens expired or revoked, and no usable refresh token) holds no place, as a timed-out
   * Salesforce session does not.
   */
  startFamily(
    clientId: string,
    subject: string,
    scope: readonly string[],
    { limit = Infinity, now = Date.now() }: { limit?: number; now?: number } = {},
  ): { family: GrantFamily; evicted: number } {
    const family: GrantFamily = { clientId, subject, scope, revoked: false, dpopJkt: undefined };
    let evicted = 0;
    if (limit !== Infinity) {
      const live = [...this.#families].filter(
        (other) => other.clientId === clientId && other.subject === subject && this.#isLive(other, now),
      );
      // Sets iterate in insertion order: the first are the oldest.
      for (const oldest of live.slice(0, Math.max(0, live.length + 1 - limit))) if (this.revokeFamily(oldest)) evicted++;
    }
    this.#families.add(family);
    return { family, evicted };
  }

  /** Whether any token of `family` can still be used at `now`. */
  #isLive(family: GrantFamily, now: number): boolean {
    if (family.revoked) return false;
    for (const entry of this.#refreshTokens.values()) {
      if (entry.family === family && entry.state === 'active' && (entry.expiresAt === undefined || now < entry.expiresAt)) return true;
    }
    for (const entry of this.#accessTokens.values()) {
      if (entry.family === family && !entry.revoked && now < entry.expiresAt) return true;
    }
    return false;
  }

  issueAccessToken(family: GrantFamily, expiresAt: number, { prefix = '', dpopJkt }: { prefix?: string; dpopJkt?: string } = {}): string {
    const token = prefix + opaqueToken();
    this.#accessTokens.set(token, { family, expiresAt, dpopJkt, revoked: false });
    return token;
  }

  issueRefreshToken(family: GrantFamily, expiresAt: number | undefined): string {
    const token = opaqueToken();
    this.#refreshTokens.set(token, { family, expiresAt, state: 'active' });
    return token;
  }

  checkAccessToken(token: string, now: number): AccessTokenCheck {
    const entry = this.#accessTokens.get(token);
    if (!entry) return { valid: false, reason: 'unknown' };
    if (entry.revoked || entry.family.revoked) return { valid: false, reason: 'revoked' };
    if (now >= entry.expiresAt) return { valid: false, reason: 'expired' };
    return { valid: true, family: entry.family, dpopJkt: entry.dpopJkt };
  }

  checkRefreshToken(token: string, clientId: string, now: number): RefreshTokenCheck {
    const entry = this.#refreshTokens.get(token);
    if (!entry) return { valid: false, reason: 'unknown' };
    // RFC 6749 §5.2: a refresh token issued to another client is invalid_grant too.
    if (entry.family.clientId !== clientId) return { valid: false, reason: 'other_client' };
    if (entry.state === 'rotated') return { valid: false, reason: 'rotated', entry };
    if (entry.family.revoked) return { valid: false, reason: 'revoked', entry };
    if (entry.expiresAt !== undefined && now >= entry.expiresAt) return { valid: false, reason: 'expired', entry };
    return { valid: true, entry };
  }

  /**
   * RFC 7009 revocation by `clientId`: a refresh token revokes its whole family, an access token
   * itself. Unknown tokens and other clients' tokens are left alone. Returns whether anything was revoked.
   */
  revoke(token: string, clientId: string | undefined): boolean {
    const refresh = this.#refreshTokens.get(token);
    if (refresh && (clientId === undefined || refresh.family.clientId === clientId)) return this.revokeFamily(refresh.family);
    const access = this.#accessTokens.get(token);
    if (!access || access.revoked || (clientId !== undefined && access.family.clientId !== clientId)) return false;
    access.revoked = true;
    return true;
  }

  revokeAccessTokens(): void {
    for (const entry of this.#accessTokens.values()) entry.revoked = true;
  }

  /** Revokes the family; returns false when it already was. */
  revokeFamily(family: GrantFamily): boolean {
    if (family.revoked) return false;
    family.revoked = true;
    return true;
  }

  /** Revokes every family; returns how many were still live. */
  revokeAllFamilies(): number {
    let count = 0;
    for (const family of this.#families) if (this.revokeFamily(family)) count++;
    return count;
  }
}

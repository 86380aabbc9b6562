/*
 * Salesforce signs each token response: signature = base64(HMAC-SHA256(key = consumer secret,
 * message = id + issued_at)). WebCrypto, so the check runs wherever fetch does, not only in Node.
 */

const encoder = new TextEncoder();

/** Standard base64 (with or without padding) to bytes; `undefined` for anything else. */
function decodeBase64(value: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value)) return undefined;
  try {
    return Uint8Array.from(atob(value), (char) => char.charCodeAt(0));
  } catch {
    return undefined;
  }
}

/** Compares in time that depends on the length only, so the comparison leaks nothing of the expected MAC. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let difference = 0;
  for (let index = 0; index < a.byteLength; index++) difference |= (a[index] as number) ^ (b[index] as number);
  return difference === 0;
}

/** True when `signature` is base64(HMAC-SHA256(secret, message)). */
export async function verifySalesforceSignature(secret: string, message: string, signature: string): Promise<boolean> {
  const received = decodeBase64(signature);
  if (!received) return false;
  const key = await globalThis.crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
  ]);
  const expected = new Uint8Array(await globalThis.crypto.subtle.sign('HMAC', key, encoder.encode(message)));
  return constantTimeEqual(expected, received);
}

import { describe, expect, it } from 'vitest';
import { createWriteOrder } from './write-order.js';

describe('createWriteOrder', () => {
  it('skips a call that a later one overtook by writing first', () => {
    const order = createWriteOrder();
    const signIn = order.take();
    const signOut = order.take();
    expect(order.overtaken(signOut)).toBe(false);
    order.landed(signOut);
    expect(order.overtaken(signIn)).toBe(true);
  });

  it('lets an earlier call write when the later one has not written (or its write failed)', () => {
    const order = createWriteOrder();
    const signIn = order.take();
    order.take();
    expect(order.overtaken(signIn)).toBe(false);
    order.landed(signIn);
    expect(order.overtaken(signIn)).toBe(false);
  });

  it('never goes back to an older call once a newer one landed', () => {
    const order = createWriteOrder();
    const [first, second, third] = [order.take(), order.take(), order.take()];
    order.landed(third);
    order.landed(first);
    expect(order.overtaken(second)).toBe(true);
  });
});

/*
 * Vitest globalSetup of the integration project: before any test runs, find redis-server and
 * Chromium (installing Debian's packages when it can), or stop the run with the install commands.
 */
import { ensureTestServices } from './test-services.js';

export default function setup(): void {
  ensureTestServices();
}

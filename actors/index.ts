// The example actors. `actorModules` lists their module paths: each worker thread imports
// these paths to find the definitions (a definition must be a top-level export).
import { fileURLToPath } from 'node:url';

export const actorModules: readonly string[] = [
  fileURLToPath(new URL('./account.ts', import.meta.url)),
  fileURLToPath(new URL('./investigation.ts', import.meta.url)),
  fileURLToPath(new URL('./entity.ts', import.meta.url)),
  fileURLToPath(new URL('./threat.ts', import.meta.url)),
];

export { account } from './account.ts';
export { investigation } from './investigation.ts';
export { entity } from './entity.ts';
export { threat } from './threat.ts';
export type { AccountState } from './account.ts';
export type { InvestigationState, Severity, Resolution } from './investigation.ts';
export type { EntityState, EntityKind, AttributeValue } from './entity.ts';
export type { ThreatState } from './threat.ts';

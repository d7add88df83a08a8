import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scaffold } from '../../runtime/cli/init.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import { given } from '../../runtime/testing/testkit.ts';
import { isActorDefinition } from '../../runtime/define.ts';
import { tempDir } from '../helpers/nats.ts';

describe('scaffold (troupe init)', () => {
  it('writes an app that depends on this troupe version and names its actor in its config', async () => {
    const dir = join(tempDir(), 'My App');
    const { files } = await scaffold(dir, { troupeVersion: '1.2.3' });
    expect(files.sort()).toEqual(['.gitignore', 'README.md', 'actors/counter.js', 'package.json', 'test/counter.test.js', 'troupe.config.mjs']);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(pkg).toMatchObject({ name: 'my-app', type: 'module', dependencies: { troupe: '^1.2.3' }, scripts: { start: 'troupe start', test: 'node --test' } });
    expect(Object.keys(pkg)).not.toContain('devDependencies');
    const config = (await import(join(dir, 'troupe.config.mjs'))) as { default: { actors: string[] } };
    expect(config.default.actors).toEqual(['./actors/counter.js']);
    expect(readFileSync(join(dir, 'README.md'), 'utf8').trim().split('\n').length).toBeLessThanOrEqual(5);
  });

  it('writes an actor whose own rules hold', async () => {
    const dir = tempDir();
    await scaffold(dir, { troupeVersion: '1.2.3' });
    // The app imports 'troupe'; here the same source is read against the repository's runtime.
    const src = readFileSync(join(dir, 'actors', 'counter.js'), 'utf8').replace("from 'troupe'", `from ${JSON.stringify(new URL('../../runtime/index.ts', import.meta.url).pathname)}`);
    writeFileSync(join(dir, 'actors', 'counter.mjs'), src);
    const { counter } = (await import(join(dir, 'actors', 'counter.mjs'))) as { counter: unknown };
    expect(isActorDefinition(counter)).toBe(true);
    given(counter as never).when('Increment', {}).thenState({ value: 1 } as never);
    given(counter as never).when('Increment', { by: 0 }).thenRejects('by-must-be-a-positive-integer');
  });

  it('refuses a non-empty folder unless forced', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    const e = await scaffold(dir, { troupeVersion: '1.2.3' }).catch((x: unknown) => x);
    expect(isTroupeError(e, 'INVALID_OPTION')).toBe(true);
    expect((e as Error).message).toContain('--force');
    expect(existsSync(join(dir, 'package.json'))).toBe(false);
    await scaffold(dir, { troupeVersion: '1.2.3', force: true });
    expect(existsSync(join(dir, 'package.json'))).toBe(true);
    expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('mine');
  });
});

import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dataPaths } from '../../runtime/cli/paths.ts';

describe('dataPaths', () => {
  it('keeps data under ./.troupe of the working directory by default', () => {
    const p = dataPaths({ env: {}, cwd: '/srv/app' });
    expect(p).toEqual({
      root: resolve('/srv/app/.troupe'), data: resolve('/srv/app/.troupe/data'), nats: resolve('/srv/app/.troupe/nats'),
      bin: resolve('/srv/app/.troupe/bin'), masterKey: resolve('/srv/app/.troupe/master.key'),
    });
  });

  it('takes TROUPE_DATA_DIR, relative to the working directory', () => {
    expect(dataPaths({ env: { TROUPE_DATA_DIR: 'state' }, cwd: '/srv/app' }).data).toBe(resolve('/srv/app/state/data'));
    expect(dataPaths({ env: { TROUPE_DATA_DIR: '/var/lib/troupe' }, cwd: '/srv/app' }).root).toBe(resolve('/var/lib/troupe'));
  });

  it('prefers --data-dir over TROUPE_DATA_DIR', () => {
    const p = dataPaths({ dataDir: 'here', env: { TROUPE_DATA_DIR: 'there' }, cwd: '/srv/app' });
    expect(p.root).toBe(resolve('/srv/app/here'));
    expect(p.nats).toBe(join(resolve('/srv/app/here'), 'nats'));
  });
});

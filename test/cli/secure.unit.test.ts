// The locked-down configuration's text and the banner of `troupe start --secure`.
import { describe, expect, it } from 'vitest';
import { banner } from '../../runtime/cli/banner.ts';
import { secureNatsConfig, securePermissions } from '../../runtime/cli/secure.ts';

const summary = { nodeName: 'n1', workers: 1, ownedShards: 4, shards: 4, natsUrl: 'nats://127.0.0.1:4222', dataDir: '/app/.troupe', httpUrl: null, traces: false,
  definitions: [{ type: 'Account', commands: new Map([['OpenAccount', { name: 'OpenAccount', schema: undefined }]]) }] };

describe('secure configuration', () => {
  it('denies client and consumer the log, stream creation and deletion, and the shard-lease bucket', () => {
    const p = securePermissions({ stream: 'S', subjectPrefix: 'app' });
    for (const who of [p.client, p.consumer]) {
      expect(who.publish.deny).toEqual(expect.arrayContaining(['app.log.>', '$JS.API.STREAM.DELETE.>', '$JS.API.STREAM.CREATE.S', '$KV.S_shards.>']));
    }
    // Replies only, for a client; a consumer also answers operators' replay and rebuild requests.
    expect(p.client.subscribe.allow).toEqual(['_INBOX.>']);
    expect(p.consumer.subscribe.allow).toEqual(['_INBOX.>', 'app.ops.dlq.replay.>', 'app.ops.projection.rebuild.>', 'app.ops.consumer.status']);
    expect(p.client.publish.deny).toContain('$JS.API.STREAM.CREATE.>');
    expect(p.consumer.publish.deny).toEqual(expect.arrayContaining(['app.cmd', 'app.cmd.>', 'app.q.>', 'app.h.>']));
    expect(p.node.publish.deny).toEqual(['$JS.API.STREAM.DELETE.>']);
  });

  it('grants the consumer user the lease bucket of each named consumer only', () => {
    const p = securePermissions({ stream: 'S', consumers: ['audit'] });
    expect(p.consumer.publish.allow).toEqual(expect.arrayContaining(['$JS.API.STREAM.CREATE.KV_S_consumer_audit', '$KV.S_consumer_audit.>']));
    expect(p.consumer.publish.allow.some((s) => s.includes('consumer_other'))).toBe(false);
    expect(() => securePermissions({ consumers: ['a.b'] })).toThrow(/not a NATS name/);
  });

  it('quotes every subject and password in the config text', () => {
    const text = secureNatsConfig({ node: 'pw-node-0123456789', client: 'pw-client-0123456789', consumer: 'pw-consumer-0123456789', admin: 'pw-admin-0123456789' });
    expect(text).toContain('password: "pw-client-0123456789"');
    expect(text).toContain('"$JS.API.STREAM.DELETE.>"');
    expect(text).not.toMatch(/[\s[,]\$JS/);
  });
});

describe('banner of a secured node', () => {
  it('says the local server is secured and where the credentials are, and prefixes the suggested commands with the client credentials', () => {
    const text = banner({ ...summary, localNats: { version: '2.10.27', storeDir: '/app/.troupe/nats', secured: '/app/.troupe/secure' } });
    expect(text).toContain('secured: credentials in /app/.troupe/secure');
    expect(text).not.toContain('open');
    expect(text).toContain(`env $(cat '/app/.troupe/secure/client.env') npx troupe send Account account-1 OpenAccount`);
  });

  it('keeps saying the local server is open without --secure', () => {
    expect(banner({ ...summary, localNats: { version: '2.10.27', storeDir: '/app/.troupe/nats' } })).toContain('local, open: for development');
  });
});

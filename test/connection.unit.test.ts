import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectFailure, describeServers, loginRefusal, natsConnectOptions, redactSecrets, resolveNatsAuth } from '../runtime/connection.ts';
import { NatsAuthError } from '../runtime/errors.ts';
import { tempDir } from './helpers/nats.ts';

const factories = { creds: (b: Uint8Array) => ({ creds: new TextDecoder().decode(b) }), nkey: (b: Uint8Array) => ({ nkey: new TextDecoder().decode(b) }) };

describe('NATS connection settings', () => {
  it('take each field from the options, else from its NATS_* variable', () => {
    const env = { NATS_USER: 'env-user', NATS_PASSWORD: 'env-pw', NATS_TOKEN: 'tok', NATS_CREDS: '/etc/app.creds', NATS_TLS_CA: '/ca.pem' };
    expect(resolveNatsAuth({}, env)).toEqual({
      user: 'env-user', password: 'env-pw', token: 'tok', credsFile: '/etc/app.creds', tls: { caFile: '/ca.pem' },
      from: { user: 'NATS_USER', password: 'NATS_PASSWORD', token: 'NATS_TOKEN', credsFile: 'NATS_CREDS' },
    });
    expect(resolveNatsAuth({ user: 'opt', password: 'p', tls: { caFile: '/other.pem' } }, env)).toMatchObject({
      user: 'opt', password: 'p', tls: { caFile: '/other.pem' }, from: { user: 'options.nats.user', password: 'options.nats.password' },
    });
    // Where each credential came from is named as its caller calls it (the command line: its flags).
    expect(resolveNatsAuth({ password: 'p', optionNames: { password: '--nats-password' } }, env).from).toEqual({
      user: 'NATS_USER', password: '--nats-password', token: 'NATS_TOKEN', credsFile: 'NATS_CREDS',
    });
    expect(resolveNatsAuth({}, {})).toEqual({});
    expect(resolveNatsAuth({ tls: true }, {})).toEqual({ tls: {} });
  });

  it('refuse half-given credentials, saying what is missing', () => {
    expect(() => resolveNatsAuth({}, { NATS_PASSWORD: 'x' })).toThrow(/a NATS password is set .* without a user: set options.nats.user or NATS_USER/);
    expect(() => resolveNatsAuth({ tls: { certFile: '/c.pem' } }, {})).toThrow(/needs both a certificate and its key/);
  });

  it('become nats.js options: user/pass, token, TLS files, and a creds or NKey authenticator read from its file', () => {
    const dir = tempDir();
    const creds = join(dir, 'app.creds');
    writeFileSync(creds, '-----BEGIN NATS USER JWT-----\nx\n');
    const seed = join(dir, 'user.nk');
    writeFileSync(seed, 'SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n');
    expect(natsConnectOptions('nats://a:4222, nats://b:4222', { user: 'u', password: 'p', tls: { caFile: '/ca.pem' } }, factories, { name: 'n' }))
      .toEqual({ name: 'n', servers: ['nats://a:4222', 'nats://b:4222'], user: 'u', pass: 'p', tls: { caFile: '/ca.pem' } });
    expect(natsConnectOptions('nats://a', { credsFile: creds }, factories, {}).authenticator).toEqual({ creds: '-----BEGIN NATS USER JWT-----\nx\n' });
    expect(natsConnectOptions('nats://a', { nkeySeed: seed }, factories, {}).authenticator).toEqual({ nkey: 'SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4' });
    expect(natsConnectOptions('nats://a', { nkeySeed: 'SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4' }, factories, {}).authenticator).toEqual({ nkey: 'SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4' });
    expect(() => natsConnectOptions('nats://a', { credsFile: join(dir, 'missing.creds') }, factories, {})).toThrow(/cannot read the NATS credentials file .*missing\.creds: ENOENT/);
  });

  it('never show a secret: servers without user:password@, errors without passwords, tokens or seeds', () => {
    expect(describeServers('nats://u:secret@a:4222,tls://tok@b:4222,nats://c:4222')).toBe('nats://a:4222,tls://b:4222,nats://c:4222');
    expect(redactSecrets('pw hunter2 tok abc123 url nats://u:hunter3@h', { password: 'hunter2', token: 'abc123' }, 'nats://u:hunter3@h')).toBe('pw *** tok *** url nats://***@h');
    const msg = connectFailure('nats://u:pw-in-url@127.0.0.1:4222', { user: 'app', password: 'hunter2' }, new Error('Authorization Violation hunter2'));
    expect(msg).toBe('cannot connect to NATS at nats://127.0.0.1:4222: the server refused user app and its password (authorization violation): check them');
    const refused = loginRefusal('nats://h:1', resolveNatsAuth({}, { NATS_USER: 'app', NATS_PASSWORD: 'hunter2' }), new Error('Authorization Violation'));
    expect(refused).toBeInstanceOf(NatsAuthError);
    expect(refused).toMatchObject({ code: 'NATS_AUTH', retryable: false, data: { servers: 'nats://h:1', credentials: 'user app and its password, from NATS_USER and NATS_PASSWORD' } });
    expect(JSON.stringify(refused!.data) + refused!.message).not.toContain('hunter2');
    expect(loginRefusal('nats://h:1', {}, new Error('connection refused'))).toBeNull();
    expect(connectFailure('nats://h:1', { token: 't0k' }, new Error('connection refused t0k'))).toBe('cannot connect to NATS at nats://h:1: connection refused ***');
  });
});

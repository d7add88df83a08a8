import { defineConfig } from 'vitest/config';

// Three projects, one after the other:
//   unit        test/**/*.unit.test.ts   no external processes; `npm run verify` runs only these
//   int-shared  test/**/*.int.test.ts    real nats-server processes, two files at a time: the
//               (but those below)        light ones, whose assertions do not depend on timing
//   int         ALONE below              one file at a time: several node processes, nats-server
//                                        clusters, kills and timings (cut-overs, hand-overs,
//                                        latency ratios) that another file's load would skew
// `npm test` ensures nats-server first (node runtime/bin/troupe.mjs ensure-nats), then runs all three.
const ALONE = [
  'test/node/cluster.int.test.ts', 'test/node/moves.int.test.ts', 'test/node/timers.int.test.ts', 'test/node/timers-move.int.test.ts',
  'test/node/failover-dupes.int.test.ts', 'test/node/outage.int.test.ts', 'test/node/recovery.int.test.ts',
  'test/consumers/scale.int.test.ts', 'test/consumers/projection-scale.int.test.ts',
  'test/remote/flood.int.test.ts', 'test/remote/routing.int.test.ts',
  'test/ops/dashboard.int.test.ts', 'test/package/package.int.test.ts', 'test/bench.int.test.ts',
  'test/cli/shutdown.int.test.ts',
];

const int = {
  include: ['test/**/*.int.test.ts'],
  environment: 'node' as const,
  pool: 'forks' as const,
  testTimeout: 60_000,
  hookTimeout: 60_000,
};

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.unit.test.ts'],
          environment: 'node',
          pool: 'forks',
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          ...int,
          name: 'int-shared',
          exclude: ALONE,
          maxWorkers: 2,
          // After the unit project, so that server timings do not compete with unit tests.
          sequence: { groupOrder: 1 },
        },
      },
      {
        test: {
          ...int,
          name: 'int',
          include: ALONE,
          fileParallelism: false,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});

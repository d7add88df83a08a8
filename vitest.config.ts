import { defineConfig } from 'vitest/config';

// Two projects:
//   unit  test/**/*.unit.test.ts  no external processes; `npm run verify` runs only these
//   int   test/**/*.int.test.ts   real nats-server processes; files run one at a time (the
//                                 machine has 2 cores and a server per file is heavy enough)
// `npm test` ensures nats-server first (node runtime/bin/troupe.mjs ensure-nats), then runs both.
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
          name: 'int',
          include: ['test/**/*.int.test.ts'],
          environment: 'node',
          pool: 'forks',
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 60_000,
          // After the unit project, so that server timings do not compete with unit tests.
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});

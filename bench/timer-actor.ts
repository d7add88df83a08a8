// The timer benchmark's actor (bench/timers.ts): `Arm` schedules one timer at a given time;
// its firing, `Wake`, decides one event.
import { defineActor } from '../runtime/index.ts';

export const sleeper = defineActor<{ woke: number }>({
  type: 'Sleeper',
  initialState: () => ({ woke: 0 }),
  commands: {
    Arm: (_s, c: { at: number }, ctx) => { ctx.schedule({ key: 'wake', at: c.at, command: 'Wake' }); },
    Wake: () => ({ type: 'AlarmRaised', payload: {} }),
  },
  events: { AlarmRaised: (s) => ({ woke: s.woke + 1 }) },
});

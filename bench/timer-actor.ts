// The timer benchmark's actor (bench/timers.ts): `Arm` schedules one timer at a given time;
// its firing, `Wake`, decides one event.
import { defineActor } from '../runtime/index.ts';

export const sleeper = defineActor<{ woke: number }>({
  type: 'Sleeper',
  initialState: () => ({ woke: 0 }),
  commands: {
    Arm: (_s, c: { at: number }, ctx) => { ctx.schedule({ key: 'wake', at: c.at, command: 'Wake' }); },
    Wake: () => ({ type: 'AlarmRaised', payload: {} }),
    // The pending-timer memory run (bench/timers.ts --pending): one event, with or without a timer far ahead.
    Poke: (_s, c: { at?: number }, ctx) => {
      if (c.at !== undefined) ctx.schedule({ key: 'wake', at: c.at, command: 'Wake' });
      return { type: 'Poked', payload: {} };
    },
  },
  events: { AlarmRaised: (s) => ({ woke: s.woke + 1 }), Poked: (s) => s },
});

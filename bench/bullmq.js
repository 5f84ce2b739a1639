// BullMQ side of compare.sh: N no-op jobs added with addBulk, processed by
// one Worker with concurrency 50; reports throughput and Redis cost per job
// from INFO deltas, as JSON on stdout.
'use strict';
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const N = Number(process.env.N || 20000);
const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379/0');
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number((url.pathname || '/0').slice(1) || 0),
  maxRetriesPerRequest: null,
};
const name = `kitbash-compare-${process.pid}`;

async function counters(redis) {
  const stats = await redis.info('commandstats');
  let calls = 0;
  for (const line of stats.split('\n')) {
    const m = line.match(/^cmdstat_[^:]+:calls=(\d+)/);
    if (m) calls += Number(m[1]);
  }
  const cpu = await redis.info('cpu');
  const f = (k) => Number((cpu.match(new RegExp(`${k}:([0-9.]+)`)) || [0, 0])[1]);
  return { calls, cpuUs: (f('used_cpu_sys') + f('used_cpu_user')) * 1e6 };
}

(async () => {
  const redis = new IORedis(connection);
  const queue = new Queue(name, { connection });
  const opts = { removeOnComplete: true, removeOnFail: true };
  for (let i = 0; i < N; i += 1000) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 1000); j++) batch.push({ name: 'noop', data: { i: j }, opts });
    await queue.addBulk(batch);
  }
  const before = await counters(redis);
  let done = 0;
  const t0 = process.hrtime.bigint();
  const finished = new Promise((resolve) => {
    const worker = new Worker(name, async () => {}, { connection, concurrency: 50 });
    worker.on('completed', () => {
      if (++done === N) resolve(worker);
    });
  });
  const worker = await finished;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const after = await counters(redis);
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  await redis.quit();
  console.log(JSON.stringify({
    system: 'bullmq',
    jobs: N,
    seconds,
    throughput: N / seconds,
    redis_commands_per_job: (after.calls - before.calls) / N,
    redis_cpu_us_per_job: (after.cpuUs - before.cpuUs) / N,
  }));
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

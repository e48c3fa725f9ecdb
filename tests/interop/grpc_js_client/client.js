#!/usr/bin/env node
// Interop check for a Layotto-compatible sidecar through @grpc/grpc-js with
// stubs loaded at runtime from the repository's proto/runtime.proto.
//
//   node client.js host:port unary   SayHello, SaveState/GetState, TryLock/Unlock, GetNextId x2
//   node client.js host:port stream  SubscribeConfiguration push for a save and a delete
//
// Prints one JSON line on success; exits 1 with the error on stderr otherwise.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.resolve(__dirname, '../../../proto/runtime.proto');
const DEADLINE_MS = 30000;
const PUSH_TIMEOUT_MS = 10000;

function loadRuntime() {
  const definition = protoLoader.loadSync(PROTO, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [path.dirname(PROTO)],
  });
  return grpc.loadPackageDefinition(definition).spec.proto.runtime.v1.Runtime;
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

// Promise wrapper for one unary rpc, naming the step in any error.
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, response) => {
      if (err) {
        reject(new Error(`${method} failed: ${err.code} ${err.details || err.message}`));
      } else {
        resolve(response);
      }
    });
  });
}

async function runUnary(client) {
  const out = {};
  const hello = await unary(client, 'SayHello', { service_name: 'helloworld', name: 'js' });
  out.hello = hello.hello;

  await unary(client, 'SaveState', {
    store_name: 'in-memory',
    states: [{ key: 'js-k', value: Buffer.from('js-v') }],
  });
  const state = await unary(client, 'GetState', { store_name: 'in-memory', key: 'js-k' });
  out.state = Buffer.from(state.data).toString('utf8');

  const lock = await unary(client, 'TryLock', {
    store_name: 'lock_demo',
    resource_id: 'js-r',
    lock_owner: 'js-o',
    expire: 5,
  });
  out.trylock = lock.success;
  const unlock = await unary(client, 'Unlock', {
    store_name: 'lock_demo',
    resource_id: 'js-r',
    lock_owner: 'js-o',
  });
  out.unlock = unlock.status;

  out.ids = [];
  for (let i = 0; i < 2; i++) {
    const id = await unary(client, 'GetNextId', { store_name: 'sequencer_demo', key: 'js-seq' });
    if (typeof id.next_id !== 'string') {
      throw new Error(`GetNextId: next_id is ${typeof id.next_id}, want string (longs: String)`);
    }
    out.ids.push(id.next_id);
  }
  return out;
}

// Queue of stream messages with awaitable take(); errors reject pending and later takes.
function pushQueue(call) {
  const items = [];
  const waiters = [];
  let failure = null;
  let ended = false;
  const settle = () => {
    while (waiters.length && (items.length || failure || ended)) {
      const w = waiters.shift();
      clearTimeout(w.timer);
      if (items.length) w.resolve(items.shift());
      else if (failure) w.reject(failure);
      else w.reject(new Error('SubscribeConfiguration stream ended before the expected push'));
    }
  };
  call.on('data', (msg) => {
    items.push(msg);
    settle();
  });
  call.on('error', (err) => {
    failure = new Error(`SubscribeConfiguration failed: ${err.code} ${err.details || err.message}`);
    settle();
  });
  call.on('end', () => {
    ended = true;
    settle();
  });
  return {
    take(what) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const i = waiters.findIndex((w) => w.timer === timer);
          if (i >= 0) waiters.splice(i, 1);
          reject(new Error(`no SubscribeConfiguration push for ${what} within ${PUSH_TIMEOUT_MS} ms`));
        }, PUSH_TIMEOUT_MS);
        waiters.push({ resolve, reject, timer });
        settle();
      });
    },
    get failure() {
      return failure;
    },
    get pending() {
      return items.length;
    },
  };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function runStream(client) {
  const call = client.SubscribeConfiguration({ deadline: deadline() });
  const queue = pushQueue(call);
  const pushes = [];
  const record = (msg) => {
    if (msg.store_name !== 'config_demo' || msg.app_id !== 'js-stream') {
      throw new Error(`unexpected push header: ${JSON.stringify(msg)}`);
    }
    for (const item of msg.items) pushes.push([item.key, item.content]);
  };
  try {
    call.write({ store_name: 'config_demo', app_id: 'js-stream', keys: ['jk'] });
    await sleep(200);
    if (queue.failure) throw queue.failure;
    if (queue.pending) {
      throw new Error(`unexpected push before any change: ${JSON.stringify(await queue.take('subscribe'))}`);
    }

    await unary(client, 'SaveConfiguration', {
      store_name: 'config_demo',
      app_id: 'js-stream',
      items: [{ key: 'jk', content: 'v1' }],
    });
    record(await queue.take('save'));

    await unary(client, 'DeleteConfiguration', {
      store_name: 'config_demo',
      app_id: 'js-stream',
      keys: ['jk'],
    });
    record(await queue.take('delete'));
  } finally {
    call.end();
    call.cancel();
  }
  return { pushes };
}

async function main() {
  const [target, mode = 'unary'] = process.argv.slice(2);
  if (!target || !['unary', 'stream'].includes(mode)) {
    throw new Error('usage: node client.js host:port [unary|stream]');
  }
  const Runtime = loadRuntime();
  const client = new Runtime(target, grpc.credentials.createInsecure());
  try {
    const out = mode === 'stream' ? await runStream(client) : await runUnary(client);
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    client.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  },
);

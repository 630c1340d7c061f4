/**
 * The htpasswd file as the proxy reads it: a huge file (a bind mount gone wrong) is refused by its size
 * without being read, a large one is parsed on a worker thread, and a file bad throughout costs a short message.
 */
import assert from 'node:assert/strict';
import { open, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { Authenticator } from '../src/auth/authenticator.ts';
import { loadHtpasswdFile, MAX_HTPASSWD_BYTES, OFF_THREAD_BYTES } from '../src/auth/htpasswd-file.ts';
import { PortcullisError } from '../src/errors.ts';
import { createLogger } from '../src/ops/log.ts';
import { makeTempDir } from './helpers/proc.js';
import { basic } from './helpers/wire.js';

const dir = makeTempDir('portcullis-htpasswd-file-');
after(() => rm(dir, { recursive: true, force: true }));

/** A file of `size` bytes that takes no disk (sparse): what `truncate -s 100M` or a wrong mount gives. */
async function sparse(name: string, size: number): Promise<string> {
  const path = join(dir, name);
  const h = await open(path, 'w');
  await h.truncate(size);
  await h.close();
  return path;
}

/** `count` users with {SHA} hashes of "pw<i>": cheap to write, valid to parse. */
function shaUsers(count: number): string {
  let text = '';
  for (let i = 0; i < count; i++) text += `user${i}:{SHA}${createHash('sha1').update(`pw${i}`).digest('base64')}\n`;
  return text;
}

describe('loadHtpasswdFile', () => {
  it('refuses a 100 MB file by its size, before reading it', async () => {
    const path = await sparse('huge', 100 * 1024 * 1024);
    const rss = process.memoryUsage().rss;
    await assert.rejects(loadHtpasswdFile(path), (err: unknown) => {
      assert.ok(err instanceof PortcullisError);
      assert.equal(err.code, 'PCL_ERR_HTPASSWD');
      assert.match(err.message, new RegExp(`^htpasswd file ${path} is 100M, over the 16M`));
      return true;
    });
    // Reading and splitting it took RSS from about 100 MB to over 1 GB.
    assert.ok(process.memoryUsage().rss - rss < 64 * 1024 * 1024, 'the file was not read into memory');
  });

  it('refuses a file one byte over the limit, and takes one at the limit to the parser', async () => {
    await assert.rejects(loadHtpasswdFile(await sparse('over', MAX_HTPASSWD_BYTES + 1)), /over the 16M/);
    // At the limit it is read and parsed (NUL bytes are not a user line): refused for its content instead.
    await assert.rejects(loadHtpasswdFile(await sparse('at', MAX_HTPASSWD_BYTES)), (err: unknown) => {
      assert.ok(err instanceof PortcullisError);
      assert.doesNotMatch(err.message, /over the/);
      assert.match(err.message, /line 1: /);
      return true;
    });
  });

  it('parses a small file on the event loop and a large one on a worker thread, with the same result', async () => {
    const small = join(dir, 'small');
    await writeFile(small, shaUsers(10));
    const s = await loadHtpasswdFile(small);
    assert.equal(s.parsedOn, 'event-loop');
    assert.equal(s.users.size, 10);

    const large = join(dir, 'large');
    const text = shaUsers(20_000);
    assert.ok(Buffer.byteLength(text) > OFF_THREAD_BYTES);
    await writeFile(large, text);
    const l = await loadHtpasswdFile(large);
    assert.equal(l.parsedOn, 'worker');
    assert.equal(l.users.size, 20_000);
    assert.deepEqual(l.users.get('user19999'), { hash: `{SHA}${createHash('sha1').update('pw19999').digest('base64')}`, scheme: 'sha1', line: 20_000 });
  });

  it('a large file bad on every line is refused with a short message, from the worker too', async () => {
    const path = join(dir, 'garbage');
    await writeFile(path, 'not a user line\n'.repeat(100_000));
    await assert.rejects(loadHtpasswdFile(path), (err: unknown) => {
      assert.ok(err instanceof PortcullisError);
      assert.equal(err.code, 'PCL_ERR_HTPASSWD');
      const lines = err.message.split('\n');
      assert.equal(lines.length, 21);
      assert.equal(lines[0], `${path} line 1: expected user:hash`);
      assert.match(lines[20]!, /stopped after 20/);
      return true;
    });
  });
});

describe('Authenticator with an oversized htpasswd', () => {
  it('a reload to a huge file is refused and the last good users keep working', async () => {
    const path = join(dir, 'htpasswd');
    await writeFile(path, `alice:$2y$${bcrypt.hashSync('secret', 4).slice(4)}\n`);
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }));
    const auth = await Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 10, logger, watch: false });
    try {
      const h = await open(path, 'r+');
      await h.truncate(100 * 1024 * 1024);
      await h.close();
      const rss = process.memoryUsage().rss;
      assert.equal(await auth.reload(), false);
      assert.ok(process.memoryUsage().rss - rss < 64 * 1024 * 1024, 'refused without reading it into memory');
      assert.match(lines.join(''), /htpasswd reload refused, keeping the last good file/);
      assert.match(lines.join(''), /over the 16M/);
      const r = await auth.authenticate(basic('alice', 'secret'), '10.0.0.1');
      assert.equal(r.outcome, 'ok');
    } finally {
      await auth.close();
    }
  });
});

describe('Authenticator.open while the file changes', () => {
  it('a change made while the file is still being read is picked up, not a crash', async () => {
    // Large enough to be parsed on a worker for a while, so the change lands mid-load and the watcher fires
    // (200 ms debounce) before open() has returned.
    const path = join(dir, 'changing');
    await writeFile(path, shaUsers(90_000));
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }));
    const opening = Authenticator.open({ htpasswdPath: path, cacheTtlMs: 60_000, cacheSize: 10, logger });
    // Replaced whole by rename, as htpasswd tools and Kubernetes Secret updates do.
    await writeFile(`${path}.new`, shaUsers(90_000) + `late:{SHA}${createHash('sha1').update('late-pw').digest('base64')}\n`);
    await rename(`${path}.new`, path);
    const auth = await opening;
    try {
      // Polling the users, not logins: failed logins of "late" before the reload would be throttled.
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && auth.users !== 90_001) await new Promise((r) => setTimeout(r, 100));
      assert.equal(auth.users, 90_001, `the user added during the load was picked up\n${lines.join('')}`);
      assert.equal((await auth.authenticate(basic('late', 'late-pw'), '10.0.0.2')).outcome, 'ok');
    } finally {
      await auth.close();
    }
  });
});

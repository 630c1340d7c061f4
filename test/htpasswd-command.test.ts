import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmod, lstat, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { htpasswdCommand } from '../src/cli/commands/htpasswd.js';
import { parseHtpasswd, verifyPassword } from '../src/auth/htpasswd.js';
import { sink } from './helpers/sink.js';
import { startRegistry } from './helpers/registry.js';
import { basic } from './helpers/wire.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-htpasswd-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let fileNo = 0;
const newPath = (): string => join(dir, `htpasswd-${++fileNo}`);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(argv: string[], stdin: string | NodeJS.ReadableStream = '', isTTY = false): Promise<Run> {
  const out = sink();
  const err = sink();
  const input = typeof stdin === 'string' ? Readable.from(stdin === '' ? [] : [Buffer.from(stdin)]) : stdin;
  const code = await htpasswdCommand(argv, { stdin: input, stdout: out.stream, stderr: err.stream, isTTY });
  return { code, stdout: out.text(), stderr: err.text() };
}

/** A tool's standard output, trimmed; fails the test if it exits non-zero. */
function tool(cmd: string, args: string[], input: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Apache's own `htpasswd`, the reference implementation. Resolves with its exit code. */
function apache(args: string[]): Promise<number> {
  return new Promise((resolve) => {
    execFile('htpasswd', args, (error) => {
      resolve(error ? Number((error as { code?: unknown }).code ?? 1) : 0);
    });
  });
}

describe('htpasswd add', () => {
  it('creates the file with mode 0600 and a $2y$ line Apache verifies, password with colons and spaces', async () => {
    const file = newPath();
    const r = await run(['add', file, 'alice', '--cost', '4'], 'pa:ss wörd\n');
    assert.deepEqual(r, { code: 0, stdout: `added user "alice" in ${file}\n`, stderr: '' });
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const text = await readFile(file, 'utf8');
    assert.match(text, /^alice:\$2y\$04\$[./A-Za-z0-9]{53}\n$/);
    assert.equal(await apache(['-vb', file, 'alice', 'pa:ss wörd']), 0);
    assert.notEqual(await apache(['-vb', file, 'alice', 'pa:ss word']), 0);
    assert.deepEqual(await readdir(dir).then((names) => names.filter((n) => n.endsWith('.tmp'))), [], 'no temporary file is left');
  });

  it('uses cost 12 by default', async () => {
    const file = newPath();
    assert.equal((await run(['add', file, 'alice'], 'secret\n')).code, 0);
    assert.match(await readFile(file, 'utf8'), /^alice:\$2y\$12\$/);
    assert.equal(await apache(['-vb', file, 'alice', 'secret']), 0);
  });

  it('replaces an existing user in place, keeps other lines and the file mode', async () => {
    const file = newPath();
    const bob = bcrypt.hashSync('bob', 4);
    await writeFile(file, `# team\nalice:${bcrypt.hashSync('old', 4)}\nbob:${bob}\n`);
    await chmod(file, 0o640);
    const r = await run(['add', '--cost=4', file, 'alice'], 'new\n');
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `updated user "alice" in ${file}\n`);
    const lines = (await readFile(file, 'utf8')).split('\n');
    assert.equal(lines[0], '# team');
    assert.match(lines[1]!, /^alice:\$2y\$04\$/);
    assert.equal(lines[2], `bob:${bob}`);
    assert.equal((await stat(file)).mode & 0o777, 0o640);
    assert.equal(await apache(['-vb', file, 'alice', 'new']), 0);
  });

  it('reads only the first line of stdin and strips its line ending', async () => {
    const file = newPath();
    assert.equal((await run(['add', file, 'alice', '--cost', '4'], 'first\r\nsecond\n')).code, 0);
    assert.equal(await apache(['-vb', file, 'alice', 'first']), 0);
    const noNewline = newPath();
    assert.equal((await run(['add', noNewline, 'bob', '--cost', '4', '--password-stdin'], 'tail')).code, 0);
    assert.equal(await apache(['-vb', noNewline, 'bob', 'tail']), 0);
  });

  it('prompts twice on a terminal, writing prompts to stderr only', async () => {
    const file = newPath();
    const tty = new PassThrough();
    tty.write('s3cret\r');
    tty.write('s3cret\r');
    const r = await run(['add', file, 'alice', '--cost', '4'], tty, true);
    assert.equal(r.code, 0);
    assert.equal(r.stderr, 'Password: \nRe-type password: \n');
    assert.ok(!r.stdout.includes('s3cret') && !r.stderr.includes('s3cret'));
    assert.equal(await apache(['-vb', file, 'alice', 's3cret']), 0);
  });

  it('handles backspace at the prompt', async () => {
    const file = newPath();
    const tty = new PassThrough();
    tty.write('abx\u007fc\nabc\n');
    assert.equal((await run(['add', file, 'alice', '--cost', '4'], tty, true)).code, 0);
    assert.equal(await apache(['-vb', file, 'alice', 'abc']), 0);
  });

  it('refuses mismatched confirmation, empty and over-long passwords, leaving the file alone', async () => {
    const file = newPath();
    await writeFile(file, '');
    const tty = new PassThrough();
    tty.write('one\ntwo\n');
    const mismatch = await run(['add', file, 'alice', '--cost', '4'], tty, true);
    assert.equal(mismatch.code, 1);
    assert.match(mismatch.stderr, /passwords do not match/);
    const empty = await run(['add', file, 'alice', '--cost', '4'], '\n');
    assert.deepEqual([empty.code, empty.stderr], [1, 'portcullis htpasswd: empty password refused\n']);
    const none = await run(['add', file, 'alice', '--cost', '4'], '');
    assert.deepEqual([none.code, none.stderr], [1, 'portcullis htpasswd: no password on standard input\n']);
    const long = await run(['add', file, 'alice', '--cost', '4'], `${'x'.repeat(73)}\n`);
    assert.equal(long.code, 1);
    assert.match(long.stderr, /73 bytes; bcrypt uses only the first 72/);
    assert.equal(await readFile(file, 'utf8'), '');
  });

  it('moves an Apache $apr1$ user to bcrypt; the $apr1$ line worked before', async () => {
    const file = newPath();
    assert.equal(await apache(['-mbc', file, 'bob', 'bob-pw']), 0);
    assert.match(await readFile(file, 'utf8'), /^bob:\$apr1\$/);
    assert.deepEqual(await run(['list', file]), { code: 0, stdout: 'bob\n', stderr: '' });
    assert.equal((await run(['verify', file, 'bob'], 'bob-pw\n')).code, 0);
    assert.equal((await run(['add', file, 'bob', '--cost', '4'], 'bob-pw\n')).code, 0);
    assert.match(await readFile(file, 'utf8'), /^bob:\$2y\$04\$/);
    assert.equal(await apache(['-vb', file, 'bob', 'bob-pw']), 0);
  });

  it('moves a DES crypt user (htpasswd -d), which the proxy refuses, to bcrypt', async () => {
    const file = newPath();
    assert.equal(await apache(['-dbc', file, 'bob', 'bob-pw']), 0);
    assert.match(await readFile(file, 'utf8'), /^bob:[./A-Za-z0-9]{13}\n$/);
    const before = await run(['list', file]);
    assert.equal(before.code, 1);
    assert.equal(before.stderr, `${file} line 1: user "bob": unsupported hash scheme DES crypt (use bcrypt: portcullis htpasswd add)\n`);
    assert.equal((await run(['add', file, 'bob', '--cost', '4'], 'bob-pw\n')).code, 0);
    assert.deepEqual(await run(['list', file]), { code: 0, stdout: 'bob\n', stderr: '' });
    assert.equal(await apache(['-vb', file, 'bob', 'bob-pw']), 0);
  });

  it('warns when other lines of the file would still be refused', async () => {
    const file = newPath();
    await writeFile(file, 'carol:plaintext\n');
    const r = await run(['add', file, 'alice', '--cost', '4'], 'pw\n');
    assert.equal(r.code, 0);
    assert.match(r.stderr, new RegExp(`warning: the proxy still refuses .*\\n.* line 1: user "carol": unsupported hash scheme`));
  });

  it('updates the target of a symlink and keeps the link', async () => {
    const target = newPath();
    const link = join(dir, `link-${fileNo}`);
    await writeFile(target, '');
    await symlink(target, link);
    assert.equal((await run(['add', link, 'alice', '--cost', '4'], 'pw\n')).code, 0);
    assert.ok((await lstat(link)).isSymbolicLink());
    assert.match(await readFile(target, 'utf8'), /^alice:\$2y\$04\$/);
    assert.equal(await apache(['-vb', link, 'alice', 'pw']), 0);
  });
});

describe('htpasswd verify, list, remove', () => {
  it('verifies a file made by Apache htpasswd -B, password with colons', async () => {
    const file = newPath();
    assert.equal(await apache(['-Bbc', '-C', '4', file, 'user', 'pa:ss']), 0);
    assert.deepEqual(await run(['verify', file, 'user'], 'pa:ss\n'), { code: 0, stdout: 'password correct\n', stderr: '' });
    assert.deepEqual(await run(['verify', file, 'user', '--password-stdin'], 'pa:sS\n'), { code: 1, stdout: 'password incorrect\n', stderr: '' });
    // and the proxy's own parser agrees
    const entry = parseHtpasswd(await readFile(file, 'utf8')).get('user')!;
    assert.match(entry.hash, /^\$2y\$04\$/);
    assert.equal(await verifyPassword('pa:ss', entry), true);
  });

  it('verifies Apache {SHA} entries', async () => {
    const file = newPath();
    assert.equal(await apache(['-sbc', file, 'old', 'legacy']), 0);
    assert.equal((await run(['verify', file, 'old'], 'legacy\n')).code, 0);
    assert.equal((await run(['verify', file, 'old'], 'Legacy\n')).code, 1);
  });

  it('verifies the lines nginx users make: htpasswd -m, openssl passwd -1/-5/-6, crypt(3) through python', async () => {
    const file = newPath();
    const password = 'pa:ss wörd';
    assert.equal(await apache(['-mbc', file, 'apr', password]), 0);
    const openssl = (flag: string): string => tool('openssl', ['passwd', flag, '-stdin'], `${password}\n`);
    const python = (method: string, rounds: string): string =>
      tool('python3', ['-W', 'ignore', '-c', `import crypt, sys; print(crypt.crypt(sys.stdin.readline().rstrip("\\n"), crypt.mksalt(crypt.METHOD_${method}, rounds=${rounds})))`], `${password}\n`);
    const lines = {
      md5: openssl('-1'),
      sha256: openssl('-5'),
      sha512: openssl('-6'),
      pysha512: python('SHA512', '20000'),
      pysha256: python('SHA256', 'None'),
    };
    await writeFile(file, `${await readFile(file, 'utf8')}${Object.entries(lines).map(([u, h]) => `${u}:${h}\n`).join('')}`);
    assert.match(lines.pysha512, /^\$6\$rounds=20000\$/);
    assert.deepEqual(await run(['list', file]), { code: 0, stdout: 'apr\nmd5\nsha256\nsha512\npysha512\npysha256\n', stderr: '' });
    for (const user of ['apr', ...Object.keys(lines)]) {
      assert.deepEqual(await run(['verify', file, user], `${password}\n`), { code: 0, stdout: 'password correct\n', stderr: '' }, user);
      assert.deepEqual(await run(['verify', file, user], 'pa:ss word\n'), { code: 1, stdout: 'password incorrect\n', stderr: '' }, user);
    }
  });

  it('verify explains an unknown user or a refused line', async () => {
    const file = newPath();
    await writeFile(file, 'carol:$6$salt$hash\nerin:$y$j9T$salt$hash\n');
    assert.deepEqual(await run(['verify', file, 'dave'], 'x\n'), { code: 1, stdout: '', stderr: `portcullis htpasswd: user "dave" not found in ${file}\n` });
    const refused = await run(['verify', file, 'carol'], 'x\n');
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr, `portcullis htpasswd: ${file} line 1: user "carol": malformed $6$ hash (use bcrypt: portcullis htpasswd add)\n`);
    const unsupported = await run(['verify', file, 'erin'], 'x\n');
    assert.equal(unsupported.stderr, `portcullis htpasswd: ${file} line 2: user "erin": unsupported hash scheme $y$ (use bcrypt: portcullis htpasswd add)\n`);
  });

  it('lists users, and fails listing duplicates', async () => {
    const file = newPath();
    const h = bcrypt.hashSync('x', 4);
    await writeFile(file, `# c\nalice:${h}\nbob:${h}\n`);
    assert.deepEqual(await run(['list', file]), { code: 0, stdout: 'alice\nbob\n', stderr: '' });
    await writeFile(file, `alice:${h}\nalice:${h}\n`);
    assert.deepEqual(await run(['list', file]), { code: 1, stdout: 'alice\n', stderr: `${file} line 2: user "alice": duplicate user (also on line 1)\n` });
  });

  it('removes a user atomically and reports an unknown one', async () => {
    const file = newPath();
    const h = bcrypt.hashSync('x', 4);
    await writeFile(file, `alice:${h}\nbob:${h}\n`);
    await chmod(file, 0o644);
    assert.deepEqual(await run(['remove', file, 'alice']), { code: 0, stdout: `removed user "alice" from ${file}\n`, stderr: '' });
    assert.equal(await readFile(file, 'utf8'), `bob:${h}\n`);
    assert.equal((await stat(file)).mode & 0o777, 0o644);
    const missing = await run(['remove', file, 'alice']);
    assert.deepEqual(missing, { code: 1, stdout: '', stderr: `portcullis htpasswd: user "alice" not found in ${file}\n` });
  });

  it('reports a missing file as a failure, not a usage error', async () => {
    const r = await run(['list', join(dir, 'absent')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ENOENT/);
  });
});

describe('htpasswd usage', () => {
  it('prints help on --help', async () => {
    const r = await run(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: portcullis htpasswd/);
  });

  it('refuses bad invocations with exit 2', async () => {
    const f = newPath();
    const cases: Array<[string[], RegExp]> = [
      [[], /missing action/],
      [['frobnicate', f, 'u'], /unknown action "frobnicate"/],
      [['add'], /missing FILE/],
      [['add', f], /missing USER/],
      [['add', f, 'alice', 'hunter2'], /never taken from the command line/],
      [['verify', f, 'alice', 'hunter2'], /never taken from the command line/],
      [['list', f, 'alice'], /unexpected argument "alice"/],
      [['add', f, 'alice', '--cost', '3'], /--cost must be a whole number from 4 to 17/],
      [['add', f, 'alice', '--cost', '18'], /--cost must be a whole number from 4 to 17/],
      [['add', f, 'alice', '--cost'], /--cost must be/],
      [['add', f, 'alice', '--cost=x'], /--cost must be/],
      [['list', f, '--cost', '5'], /--cost applies to add only/],
      [['remove', f, 'alice', '--password-stdin'], /--password-stdin does not apply to remove/],
      [['add', f, 'alice', '--password'], /unknown option --password/],
      [['add', f, 'a:b'], /invalid USER: user name contains ":"/],
    ];
    for (const [argv, re] of cases) {
      const r = await run(argv, 'pw\n');
      assert.equal(r.code, 2, argv.join(' '));
      assert.match(r.stderr, re, argv.join(' '));
      assert.match(r.stderr, /Usage: portcullis htpasswd/);
    }
    await assert.rejects(stat(f), /ENOENT/, 'nothing was written');
  });
});

describe('registry:2 (distribution) accepts what add writes', () => {
  it('authenticates a $2y$ user made by add', async () => {
    const file = newPath();
    assert.equal((await run(['add', file, 'alice', '--cost', '4'], 'pa:ss wörd\n')).code, 0);
    const registry = await startRegistry({ htpasswd: file });
    try {
      const get = async (auth?: string): Promise<number> => (await fetch(`${registry.url}/v2/`, { headers: auth ? { Authorization: auth } : {} })).status;
      assert.equal(await get(), 401);
      assert.equal(await get(basic('alice', 'pa:ss wörd')), 200);
      assert.equal(await get(basic('alice', 'pa:ss word')), 401);
    } finally {
      await registry.close();
    }
  });
});

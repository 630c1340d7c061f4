/**
 * The raw path's wire-level tests (test/relay.test.ts) on every supported Node major, not only the one
 * running the suite: the relay leans on details that differ between majors (how the parser hands over body
 * chunks, when write callbacks run, ArrayBuffer.prototype.transfer from Node 22 on), and the Dockerfile ships
 * Node 24. Each major runs the whole file in a process of its own.
 *
 * Node binaries: test/helpers/nodes.ts. A major that is not installed is skipped, except in CI (CI set),
 * where .ci/run installs them and a missing one is a failure.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { testNodes } from './helpers/nodes.js';
import { REPO_ROOT } from './helpers/portcullis.js';

const current = Number(process.versions.node.split('.')[0]);

for (const { major, path } of testNodes().filter((n) => n.major !== current)) {
  const missing = path === null ? `Node ${major} is not installed here: run scripts/test-nodes.sh` : false;
  describe(`Node ${major}`, { skip: process.env['CI'] ? false : missing }, () => {
    test('test/relay.test.ts passes', async (t) => {
      assert.ok(path !== null, `${missing}`);
      // A test file run by `node --test` must not look like one of this runner's own children.
      const env = { ...process.env };
      delete env['NODE_TEST_CONTEXT'];
      const run = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
        const child = spawn(path, ['--import', 'tsx', '--test', '--test-reporter=tap', 'test/relay.test.ts'], { cwd: REPO_ROOT, env });
        let out = '';
        child.stdout.on('data', (b: Buffer) => (out += b.toString()));
        child.stderr.on('data', (b: Buffer) => (out += b.toString()));
        child.once('error', reject);
        child.once('close', (code) => resolve({ code, out }));
      });
      const count = (k: string): number => Number(new RegExp(`^# ${k} (\\d+)$`, 'm').exec(run.out)?.[1] ?? -1);
      t.diagnostic(`Node ${major}: ${count('pass')} passed, ${count('fail')} failed`);
      assert.equal(run.code, 0, run.out.slice(-4000));
      assert.equal(count('fail'), 0);
      assert.ok(count('pass') >= 40, `the whole file ran (${count('pass')} passed)`);
    });
  });
}

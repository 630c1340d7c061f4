/** The streams a command talks to; tests pass in-memory ones. */
export interface CommandIO {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Is stdin a terminal (so a password can be prompted for)? */
  isTTY: boolean;
}

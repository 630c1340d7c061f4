/**
 * Routes for paths outside the registry API: the one place a page or endpoint of the proxy's own is added
 * (the registry API itself, /v2/, always goes through the pipeline's steps). Longest prefix wins.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export type RouteHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export class Router {
  readonly #routes: Array<{ prefix: string; handler: RouteHandler }> = [];

  /** Serve paths equal to `prefix`, or under it when it ends with `/`. */
  add(prefix: string, handler: RouteHandler): this {
    this.#routes.push({ prefix, handler });
    this.#routes.sort((a, b) => b.prefix.length - a.prefix.length);
    return this;
  }

  find(path: string): RouteHandler | null {
    for (const r of this.#routes) {
      if (path === r.prefix || (r.prefix.endsWith('/') && path.startsWith(r.prefix))) return r.handler;
    }
    return null;
  }
}

// The edge's nginx, run as a child of the agent: started once, reloaded with SIGHUP (old workers finish their
// requests), stopped gracefully with SIGQUIT.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { SwarmgateError } from '../errors.ts';

export interface NginxProcess {
  start(confPath: string): Promise<void>;
  reload(): void;
  stop(graceMs: number): Promise<void>;
  readonly running: boolean;
  /** Called if nginx exits without being asked to. */
  onUnexpectedExit(listener: (code: number | null) => void): void;
}

export function createNginxProcess(nginxBinary: string): NginxProcess {
  let child: ChildProcess | null = null;
  let stopping = false;
  const listeners: ((code: number | null) => void)[] = [];

  return {
    get running() {
      return child !== null && child.exitCode === null && child.signalCode === null;
    },
    onUnexpectedExit(listener) {
      listeners.push(listener);
    },
    start(confPath) {
      return new Promise((resolve, reject) => {
        const proc = spawn(nginxBinary, ['-c', confPath, '-g', 'daemon off;'], { stdio: 'inherit' });
        child = proc;
        proc.once('error', (error) =>
          reject(
            new SwarmgateError('ERR_NGINX_UNAVAILABLE', `cannot start nginx: ${error.message}`, {}, error),
          ),
        );
        proc.once('spawn', () => resolve());
        proc.once('exit', (code) => {
          if (!stopping) for (const listener of listeners) listener(code);
        });
      });
    },
    reload() {
      if (!child?.pid) throw new SwarmgateError('ERR_NGINX_UNAVAILABLE', 'nginx is not running');
      child.kill('SIGHUP');
    },
    async stop(graceMs) {
      stopping = true;
      const proc = child;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGQUIT');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

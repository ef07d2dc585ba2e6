// A fake nginx for edge-agent tests: it loads its config's peers.txt at start and reload, like the real one's
// init_by_lua, takes posted peers, and answers GET /peers with what it routes to.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { NginxProcess } from '../../src/edge/nginx-process.ts';

/** Loads its config's peers.txt at start and reload, like the real one's init_by_lua, and answers GET /peers. */
export class FakeNginx implements NginxProcess {
  confPath: string | null = null;
  reloads = 0;
  running = false;
  peers: string | null = null;
  /** False: a reload keeps the old config, as nginx does when the new one fails to load. */
  reloadWorks = true;
  async start(confPath: string): Promise<void> {
    this.confPath = confPath;
    this.peers = readFileSync(path.join(path.dirname(confPath), 'peers.txt'), 'utf8');
    this.running = true;
  }
  reload(): void {
    this.reloads++;
    if (this.reloadWorks)
      this.peers = readFileSync(path.join(path.dirname(this.confPath ?? ''), 'peers.txt'), 'utf8');
  }
  peerUpdates: string[] = [];
  /** False: behave like an nginx still switching configs, so the agent falls back to a reload. */
  acceptPeers = true;
  async updatePeers(peersText: string): Promise<boolean> {
    if (this.acceptPeers) {
      this.peerUpdates.push(peersText);
      this.peers = peersText;
    }
    return this.acceptPeers;
  }
  /** Bodies of POST /early, in order; false: a config without early routing. */
  earlyPosts: string[] = [];
  acceptEarly = true;
  /** How many of the next clears (empty posts) fail, as a post whose answer is lost does. */
  failClears = 0;
  async updateEarly(body: string): Promise<boolean> {
    if (body === '' && this.failClears > 0) {
      this.failClears--;
      return false;
    }
    if (this.acceptEarly) this.earlyPosts.push(body);
    return this.acceptEarly;
  }
  async runningPeers(): Promise<string | null> {
    return this.running ? this.peers : null;
  }
  /** GET /health's answer (lua/swarmgate/health.lua's lines); null: a config without health checks. */
  health: string | null = null;
  async taskHealth(): Promise<string | null> {
    return this.running ? this.health : null;
  }
  /** GET /unreachable's answer (lua/swarmgate/balancer.lua's lines). */
  unreachableText = '';
  async unreachable(): Promise<string | null> {
    return this.running ? this.unreachableText : null;
  }
  async stop(): Promise<void> {
    this.running = false;
  }
  onUnexpectedExit(): void {}
}

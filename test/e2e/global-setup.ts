// Runs once around the whole e2e suite: the swarmgate stack is deployed before the first test file and removed
// after the last, even when tests fail. The lab itself (engine, swarm, images) comes from `npm run lab -- up`.
import { deployStack, docker, removeStack } from './support/lab.ts';

export async function globalSetup(): Promise<void> {
  const state = await docker(['info', '--format', '{{.Swarm.LocalNodeState}}']).catch((error: unknown) => {
    throw new Error(`no Docker engine answers (${String(error)}); run \`npm run lab -- up\` first`);
  });
  if (state !== 'active')
    throw new Error('this Docker engine is not in a swarm; run `npm run lab -- up` first');
  await removeStack();
  // Start from no stored certificates, so every run orders its own (the lab's controller made these).
  const stateConfigs = await docker(['config', 'ls', '-q', '--filter', 'label=swarmgate.state']);
  if (stateConfigs) await docker(['config', 'rm', ...stateConfigs.split('\n')]);
  await deployStack();
}

export async function globalTeardown(): Promise<void> {
  const leftovers = await docker(['service', 'ls', '-q', '--filter', 'label=sg-e2e=1']).catch(() => '');
  if (leftovers) await docker(['service', 'rm', ...leftovers.split('\n')]).catch(() => '');
  await removeStack();
}

// Runs once around the whole e2e suite: the lab's swarmgate stack is deployed before the first test file and
// removed after the last, even when tests fail. The lab itself (engine, swarm, images, secrets) comes from
// `npm run lab -- up`. Cleaning is `lab clean`: only what carries the lab's marks, never a real deployment.
import { deployStack, docker, labClean } from './support/lab.ts';

export async function globalSetup(): Promise<void> {
  const state = await docker(['info', '--format', '{{.Swarm.LocalNodeState}}']).catch((error: unknown) => {
    throw new Error(`no Docker engine answers (${String(error)}); run \`npm run lab -- up\` first`);
  });
  if (state !== 'active')
    throw new Error('this Docker engine is not in a swarm; run `npm run lab -- up` first');
  // Also the lab controller's stored certificates, so every run orders its own.
  await labClean();
  await deployStack();
}

export async function globalTeardown(): Promise<void> {
  await labClean();
}

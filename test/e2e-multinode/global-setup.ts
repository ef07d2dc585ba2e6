// Runs once around the multi-node suite: the swarmgate stack is deployed inside the lab's nodes before the first
// test file and removed after the last. The nodes come from `npm run lab -- up --nodes 3`.
import { deployStack, labNodes, removeStack, swarmNodes } from './support/nodes.ts';

export async function globalSetup(): Promise<void> {
  const nodes = await labNodes();
  if (nodes.length < 3) {
    throw new Error(
      `the multi-node suite needs 3 lab nodes, found ${nodes.length}: run \`npm run lab -- up --nodes 3\` first`,
    );
  }
  const swarm = await swarmNodes();
  const notReady = nodes.filter((node) => swarm.get(node.name)?.status !== 'Ready');
  if (notReady.length > 0) {
    throw new Error(
      `lab nodes not Ready in the swarm: ${notReady.map((node) => node.name).join(', ')}; run \`npm run lab -- up --nodes ${nodes.length}\``,
    );
  }
  await removeStack();
  await deployStack();
}

export async function globalTeardown(): Promise<void> {
  await removeStack().catch((error: unknown) => console.error(`removing the stack: ${String(error)}`));
}

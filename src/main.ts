#!/usr/bin/env node
// Composition root: reads configuration, builds the logger and adapters, starts the chosen role.
// The only place that calls process.exit.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import tls from 'node:tls';
import { createAcmeAdapter } from './acme/acme-adapter.ts';
import { deriveStateKey } from './acme/state-store.ts';
import { readUserCertificates } from './acme/user-certificates.ts';
import type { LoadedCertificate } from './acme/user-certificates.ts';
import { runCli } from './cli/cli.ts';
import { EDGE_PEERS_SOCKET, readControllerConfig, readEdgeConfig, unsupportedProxyEnv } from './config.ts';
import { startController } from './controller/controller.ts';
import { createDockerodeAdapter } from './docker/dockerode-adapter.ts';
import { createHttpsControllerChannel } from './edge/controller-channel.ts';
import { startEdgeAgent } from './edge/edge-agent.ts';
import { createNginxProcess, WITHOUT_NET_ADMIN } from './edge/nginx-process.ts';
import { describeError, isSwarmgateError, SwarmgateError } from './errors.ts';
import { createLogger } from './logger.ts';
import type { Logger } from './logger.ts';
import { createNginxValidator, runNginxTest } from './nginx/nginx-validator.ts';
import { systemClock } from './reconcile/clock.ts';
import { createTemplateRenderer } from './render/nunjucks-env.ts';
import { SWARMGATE_VERSION } from './version.ts';

const USAGE = `usage: swarmgate <command>
  controller               watch Swarm, render and publish the edge config, serve the API
  edge                     run nginx and follow the controller's config bundle
  healthcheck <role>       exit 0 when the local controller or edge is healthy
  status [--json]          show the controller's status (run these inside the controller)
  services                 routed services with their tasks
  scale <svc> <n> [--wait] scale a service (and wait until the edges route every task)
  image <svc> <img> [--wait]  roll a service to an image, with the matching registry credentials
  registry list|set|delete|repos|tags   registry credentials and browsing
  api <METHOD> <path>      any admin API call, JSON body on stdin
  version                  print the version`;

/** A Docker secret's text; at least 16 characters, since it guards the API or the stored keys. */
async function readSecret(file: string, what: string): Promise<string> {
  let secret: string;
  try {
    secret = (await readFile(file, 'utf8')).trim();
  } catch (error) {
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `cannot read the ${what} from ${file} (a Docker secret): ${describeError(error)}`,
    );
  }
  if (secret.length < 16) {
    throw new SwarmgateError('ERR_CONFIG_INVALID', `the ${what} in ${file} is shorter than 16 characters`);
  }
  return secret;
}

const readToken = (file: string): Promise<string> => readSecret(file, 'token');

/** A PEM file from a Docker secret; the error names the file. */
async function readPem(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `cannot read the ${what} from ${file} (a Docker secret): ${describeError(error)}`,
    );
  }
  if (!text.includes('-----BEGIN ')) {
    throw new SwarmgateError('ERR_CONFIG_INVALID', `the ${what} in ${file} is not PEM`);
  }
  return text;
}

/** The API's key pair: both files must exist and belong together, or the controller does not start. */
async function readChannelTls(keyFile: string, certFile: string): Promise<{ key: string; cert: string }> {
  const key = await readPem(keyFile, 'channel TLS key');
  const cert = await readPem(certFile, 'channel TLS certificate');
  try {
    tls.createSecureContext({ key, cert });
  } catch (error) {
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `the channel key ${keyFile} and certificate ${certFile} do not form a key pair: ${describeError(error)}`,
    );
  }
  return { key, cert };
}

async function loadUserCertificates(dir: string, logger: Logger): Promise<LoadedCertificate[]> {
  const { certificates, problems } = await readUserCertificates(dir);
  for (const problem of problems) logger.error(problem, 'operator certificate not usable');
  if (certificates.length > 0) {
    logger.info(
      { certificates: certificates.map((certificate) => certificate.name) },
      'operator certificates loaded',
    );
  }
  return certificates;
}

function onShutdown(logger: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: describeError(error) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}

async function runController(): Promise<void> {
  const config = readControllerConfig(process.env);
  const logger = createLogger(config.logLevel).child({ role: 'controller' });
  logger.info({ version: SWARMGATE_VERSION }, 'starting controller');
  for (const { name, instead } of unsupportedProxyEnv(process.env)) {
    logger.warn(
      { code: 'UNSUPPORTED_SETTING', setting: name, instead },
      `${name} is an nginx-proxy setting; use ${instead}`,
    );
  }
  const controller = await startController({
    config,
    adminToken: await readToken(config.tokenFile),
    edgeToken: await readSecret(config.edgeTokenFile, 'edge token'),
    channelTls: await readChannelTls(config.channelKeyFile, config.channelCertFile),
    docker: createDockerodeAdapter(config.dockerSocket),
    validator: createNginxValidator(config.nginxBinary),
    templates: createTemplateRenderer(),
    logger,
    clock: systemClock,
    version: SWARMGATE_VERSION,
    acme: createAcmeAdapter(config.tls.acme.caFile ? await readFile(config.tls.acme.caFile, 'utf8') : null),
    stateKey: deriveStateKey(await readSecret(config.tls.stateKeyFile, 'state key')),
    userCertificates: await loadUserCertificates(config.tls.certsDir, logger),
  });
  onShutdown(logger, () => controller.stop());
}

async function runEdge(): Promise<void> {
  const config = readEdgeConfig(process.env, os.hostname());
  const logger = createLogger(config.logLevel).child({ role: 'edge', edge: config.edgeId });
  logger.info({ version: SWARMGATE_VERSION, controller: config.controllerUrl }, 'starting edge');
  // The edge image has setpriv; a hand-run edge without it starts nginx with whatever capabilities it has.
  const nginx = createNginxProcess(config.nginxBinary, EDGE_PEERS_SOCKET, {
    launcher: existsSync('/usr/bin/setpriv') ? WITHOUT_NET_ADMIN : [],
  });
  nginx.onUnexpectedExit((code) => {
    logger.fatal({ code }, 'nginx exited; the edge stops so Swarm restarts it');
    process.exit(1);
  });
  const edge = await startEdgeAgent({
    config,
    nodeId: process.env.SWARMGATE_NODE_ID ?? null,
    channel: createHttpsControllerChannel({
      url: config.controllerUrl,
      token: await readSecret(config.tokenFile, 'edge token'),
      ca: await readPem(config.controllerCertFile, "controller's channel certificate"),
      timeoutMs: config.pollTimeoutMs,
    }),
    nginx,
    metricsSocket: EDGE_PEERS_SOCKET,
    testConfig: (confPath, signal) => runNginxTest(config.nginxBinary, confPath, signal),
    templates: createTemplateRenderer(),
    logger,
    clock: systemClock,
    version: SWARMGATE_VERSION,
  });
  onShutdown(logger, () => edge.stop());
}

async function healthcheck(role: string | undefined): Promise<void> {
  const port =
    role === 'controller'
      ? readControllerConfig(process.env).healthPort
      : role === 'edge'
        ? readEdgeConfig(process.env, os.hostname()).healthPort
        : null;
  if (port === null)
    throw new SwarmgateError('ERR_BAD_REQUEST', 'healthcheck needs a role: controller or edge');
  const response = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(3000) });
  if (!response.ok) throw new SwarmgateError('ERR_NOT_FOUND', `unhealthy: HTTP ${response.status}`);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function main(argv: readonly string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'controller':
      return runController();
    case 'edge':
      return runEdge();
    case 'healthcheck':
      return healthcheck(rest[0]);
    case 'status':
    case 'services':
    case 'scale':
    case 'image':
    case 'registry':
    case 'api':
      return runCli(argv, { env: process.env, out: (line) => console.log(line), readStdin });
    case 'version':
      console.log(SWARMGATE_VERSION);
      return;
    default:
      console.error(USAGE);
      process.exit(2);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  const code = isSwarmgateError(error) ? error.code : 'ERR_INTERNAL';
  console.error(JSON.stringify({ level: 'fatal', code, msg: describeError(error) }));
  process.exit(1);
});

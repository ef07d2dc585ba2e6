// The test Echo service's client side, shared by the real-nginx and the lab gRPC tests: method definitions with raw
// bytes as messages (no .proto file on either side), and a client of an edge's HTTPS port.
import * as grpc from '@grpc/grpc-js';

const bytes = {
  requestSerialize: (value: Buffer) => value,
  requestDeserialize: (value: Buffer) => value,
  responseSerialize: (value: Buffer) => value,
  responseDeserialize: (value: Buffer) => value,
};

/** Echo (unary), Count (server streaming), Join (client streaming), Chat (bidi). */
export const ECHO_SERVICE = {
  echo: { path: '/swarmgate.test.Echo/Echo', requestStream: false, responseStream: false, ...bytes },
  count: { path: '/swarmgate.test.Echo/Count', requestStream: false, responseStream: true, ...bytes },
  join: { path: '/swarmgate.test.Echo/Join', requestStream: true, responseStream: false, ...bytes },
  chat: { path: '/swarmgate.test.Echo/Chat', requestStream: true, responseStream: true, ...bytes },
} satisfies grpc.ServiceDefinition;

export interface EchoClient extends grpc.Client {
  echo(
    request: Buffer,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, reply?: Buffer) => void,
  ): grpc.ClientUnaryCall;
  count(request: Buffer, options: grpc.CallOptions): grpc.ClientReadableStream<Buffer>;
  join(
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, reply?: Buffer) => void,
  ): grpc.ClientWritableStream<Buffer>;
  chat(options: grpc.CallOptions): grpc.ClientDuplexStream<Buffer, Buffer>;
}

/** A client of an edge's HTTPS port on loopback: TLS verified against `root`, HTTP/2 by ALPN, `host` as :authority. */
export function edgeEchoClient(port: number, root: string | Buffer, host: string): EchoClient {
  const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(root)), {
    'grpc.ssl_target_name_override': host,
    'grpc.default_authority': host,
  }) as unknown as EchoClient;
}

/** One Echo call with a 10 s deadline. */
export function unaryEcho(client: EchoClient, message: string): Promise<string> {
  return new Promise((resolve, reject) =>
    client.echo(Buffer.from(message), { deadline: Date.now() + 10_000 }, (error, reply) =>
      error ? reject(error) : resolve(String(reply)),
    ),
  );
}

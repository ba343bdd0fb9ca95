// Sends spans with a real Jaeger client library (npm's jaeger-client) through its HTTP sender
// (Thrift binary over HTTP) and its UDP agent sender (Thrift binary emitBatch datagrams), then
// prints the trace and span IDs it made as one JSON line.
//
// usage: node jaeger_client.js <http endpoint URL> <udp host> <udp port>
'use strict';

const { Tracer, RemoteReporter, ConstSampler, opentracing } = require('jaeger-client');
const HTTPSender = require('jaeger-client/dist/src/reporters/http_sender.js').default;
const UDPSender = require('jaeger-client/dist/src/reporters/udp_sender.js').default;

const [endpoint, udpHost, udpPort] = process.argv.slice(2);
const logger = { info() {}, error(msg) { console.error(msg); } };

function tracer(service, sender, tags, traceId128bit) {
  const reporter = new RemoteReporter(sender, { logger, bufferFlushInterval: 100 });
  return new Tracer(service, reporter, new ConstSampler(true), { tags, logger, traceId128bit });
}

function close(t) {
  return new Promise((resolve) => t.close(resolve));
}

async function main() {
  // Over HTTP: a server span with a failing client child, 128-bit trace ID.
  const shop = tracer('shop', new HTTPSender({ endpoint, logger }), { region: 'eu-1' }, true);
  const root = shop.startSpan('checkout', {
    tags: { 'span.kind': 'server', 'http.status_code': 200, 'http.method': 'POST' },
  });
  const charge = shop.startSpan('charge', { childOf: root.context() });
  charge.setTag('span.kind', 'client');
  charge.setTag(opentracing.Tags.ERROR, true);
  charge.setTag('amount', 12.5);
  charge.log({ event: 'retry', attempt: 2 });
  charge.finish();
  root.finish();
  await close(shop);

  // Over UDP: a root and a child with a follows-from reference, 64-bit trace ID.
  const stock = tracer('inventory', new UDPSender({ host: udpHost, port: Number(udpPort), logger }), {}, false);
  const reserve = stock.startSpan('reserve', { tags: { 'span.kind': 'server', warehouse: 'north' } });
  const lookup = stock.startSpan('lookup', {
    references: [opentracing.followsFrom(reserve.context())],
  });
  lookup.finish();
  reserve.finish();
  await close(stock);

  console.log(JSON.stringify({
    http_trace: root.context().toTraceId(),
    checkout: root.context().toSpanId(),
    charge: charge.context().toSpanId(),
    udp_trace: reserve.context().toTraceId(),
    reserve: reserve.context().toSpanId(),
    lookup: lookup.context().toSpanId(),
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

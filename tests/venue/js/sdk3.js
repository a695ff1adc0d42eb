"use strict";
// @alpacahq/alpaca-trade-api 3.x against the venue: REST, both streams, errors.
// Pointed at the venue the 3.x way: baseUrl, dataBaseUrl and dataStreamUrl.
const Alpaca = require("alpaca3");
const { venueFromEnv, waitFor, eventPromise, run } = require("./harness");

const venue = venueFromEnv();
const alpaca = new Alpaca({
  keyId: venue.keyId,
  secretKey: venue.secret,
  paper: true,
  baseUrl: venue.url,
  dataBaseUrl: venue.url,
  // 3.x builds wss://HOST/v2/<feed> from this whatever its scheme: the venue must speak TLS.
  dataStreamUrl: venue.url,
  feed: "iex",
});
const updates = [];
const quotes = [];

function apiError(err) {
  if (!err.response) return { thrown: String(err) };
  return { status: err.response.status, body: err.response.data };
}

async function rejected(promise) {
  try {
    await promise;
  } catch (err) {
    return apiError(err);
  }
  throw new Error("expected the venue to refuse");
}

async function collect(gen) {
  const out = [];
  for await (const x of gen) out.push(x);
  return out;
}

const start = "2025-03-04T15:00:00Z";
const end = "2025-03-04T15:10:00Z";

run({
  account: async () => {
    const a = await alpaca.getAccount();
    return { cash: a.cash, status: a.status };
  },
  clock: async () => alpaca.getClock(),
  trade_stream: async () => {
    const ws = alpaca.trade_ws;
    ws.onOrderUpdate((u) => updates.push(u));
    const listening = eventPromise("listening on trade_updates", (done) =>
      ws.onConnect(() => {
        ws.conn.on("message", (data) => {
          const frame = JSON.parse(data.toString());
          if (frame.stream === "listening") done(frame.data);
        });
        ws.subscribe(["trade_updates"]);
      }),
    );
    ws.connect();
    return listening;
  },
  market_buy: async () => {
    const order = await alpaca.createOrder({
      symbol: "AAPL", qty: 2, side: "buy", type: "market", time_in_force: "day", client_order_id: "js3-buy",
    });
    const fill = await waitFor("fill on the trade stream", () =>
      updates.find((u) => u.event === "fill" && u.order.id === order.id));
    return { status: order.status, fill: { event: fill.event, qty: fill.qty, position_qty: fill.position_qty,
      order_status: fill.order.status, client_order_id: fill.order.client_order_id } };
  },
  position: async () => {
    const p = await alpaca.getPosition("AAPL");
    return { qty: p.qty, qty_available: p.qty_available };
  },
  trailing_stop: async () => {
    const o = await alpaca.createOrder({
      symbol: "AAPL", qty: 2, side: "sell", type: "trailing_stop", time_in_force: "gtc", trail_price: "50",
    });
    const replaced = await alpaca.replaceOrder(o.id, { trail: "60" });
    await alpaca.cancelOrder(replaced.id);
    return { type: o.type, trail_price: o.trail_price, hwm: o.hwm, stop_price: o.stop_price,
      replaced_trail_price: replaced.trail_price, replaced_stop_price: replaced.stop_price, replaced_hwm: replaced.hwm };
  },
  oco: async () => {
    const q = await alpaca.getLatestQuote("AAPL");
    const o = await alpaca.createOrder({
      symbol: "AAPL", qty: 2, side: "sell", type: "limit", time_in_force: "gtc", order_class: "oco",
      take_profit: { limit_price: (q.BidPrice * 1.5).toFixed(2) }, stop_loss: { stop_price: (q.BidPrice * 0.5).toFixed(2) },
    });
    await alpaca.cancelOrder(o.legs[0].id); // one cancelled cancels both
    const parent = await alpaca.getOrder(o.id);
    return { order_class: o.order_class, legs: o.legs.length, leg_type: o.legs[0].type, parent_after: parent.status };
  },
  oto: async () => {
    const q = await alpaca.getLatestQuote("MSFT");
    const o = await alpaca.createOrder({
      symbol: "MSFT", qty: 1, side: "buy", type: "limit", time_in_force: "gtc", limit_price: (q.AskPrice / 2).toFixed(2),
      order_class: "oto", stop_loss: { stop_price: (q.AskPrice / 4).toFixed(2) },
    });
    await alpaca.cancelOrder(o.id);
    return { order_class: o.order_class, legs: o.legs.map((l) => [l.type, l.status]) };
  },
  notional: async () => {
    const o = await alpaca.createOrder({ symbol: "MSFT", notional: 100, side: "buy", type: "market", time_in_force: "day" });
    const done = await waitFor("notional fill", async () => {
      const x = await alpaca.getOrder(o.id);
      return x.status === "filled" && x;
    });
    return { qty: o.qty, notional: o.notional, filled_qty: done.filled_qty, filled_avg_price: done.filled_avg_price,
      position_qty: (await alpaca.getPosition("MSFT")).qty };
  },
  errors: async () => ({
    get_position: await rejected(alpaca.getPosition("SPY")),
    close_position: await rejected(alpaca.closePosition("SPY")),
    two_trails: await rejected(alpaca.createOrder({
      symbol: "AAPL", qty: 1, side: "sell", type: "trailing_stop", time_in_force: "day", trail_price: "1", trail_percent: "1",
    })),
    fractional_gtc: await rejected(alpaca.createOrder({
      symbol: "AAPL", qty: 0.5, side: "buy", type: "market", time_in_force: "gtc",
    })),
    bad_key: await rejected(new Alpaca({ keyId: "nope", secretKey: "nope", baseUrl: venue.url }).getAccount()),
  }),
  historical: async () => {
    const q = await collect(alpaca.getQuotesV2("AAPL", { start, end, pageLimit: 7 }));
    const t = await collect(alpaca.getTradesV2("AAPL", { start, end, limit: 9, pageLimit: 4 }));
    const multi = await alpaca.getMultiQuotesV2(["AAPL", "MSFT"], { start, end, pageLimit: 11 });
    const bars = await collect(alpaca.getBarsV2("AAPL", { start, end, timeframe: alpaca.newTimeframe(1, alpaca.timeframeUnit.MIN) }));
    return { quotes: q.length, first_quote: q[0], trades: t.length, first_trade: t[0], bars: bars.length,
      multi: Object.fromEntries([...multi].map(([s, v]) => [s, v.length])) };
  },
  data_stream: async () => {
    const s = alpaca.data_stream_v2;
    const first = eventPromise("a quote on the data stream", (done) => {
      s.onStockQuote((q) => {
        quotes.push(q);
        done(q);
      });
    });
    s.onConnect(() => s.subscribeForQuotes(["AAPL"]));
    s.connect();
    const q = await first;
    return { symbol: q.Symbol, bid: q.BidPrice, ask: q.AskPrice };
  },
  close: async () => {
    const o = await alpaca.closePosition("AAPL");
    alpaca.trade_ws.disconnect();
    alpaca.data_stream_v2.disconnect();
    return { side: o.side, qty: o.qty, type: o.type };
  },
});

"use strict";
// @alpacahq/alpaca-trade-api 4.x against the venue: REST, both streams, errors.
// 4.x has no base-URL options: a `pre` request middleware sends every REST call
// (trading and market data) to the venue, and each stream takes its own `url`.
const { Alpaca, ApiError } = require("alpaca4");
const { venueFromEnv, waitFor, eventPromise, run } = require("./harness");

const venue = venueFromEnv();
const target = new URL(venue.url);
const toVenue = {
  async pre({ url, init }) {
    const u = new URL(url); // https://paper-api.alpaca.markets/v2/... or https://data.alpaca.markets/v2/...
    u.protocol = target.protocol;
    u.host = target.host;
    return { url: u.toString(), init };
  },
};
const alpaca = new Alpaca({
  keyId: venue.keyId, secret: venue.secret, paper: true, middleware: [toVenue], retry: false, timeoutMs: 10_000,
});
const updates = [];

async function rejected(promise) {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ApiError) return { status: err.status, code: err.code, message: err.message };
    return { thrown: String(err) };
  }
  throw new Error("expected the venue to refuse");
}

const start = new Date("2025-03-04T15:00:00Z");
const end = new Date("2025-03-04T15:10:00Z");
let tradeStream;
let stockStream;

run({
  account: async () => {
    const a = await alpaca.trading.account.getAccount();
    return { cash: String(a.cash), status: a.status };
  },
  clock: async () => {
    const c = await alpaca.trading.clock.legacyClock();
    return { is_open: c.isOpen, next_open: c.nextOpen, next_close: c.nextClose, timestamp: c.timestamp };
  },
  trade_stream: async () => {
    tradeStream = alpaca.trading.stream({ url: `${venue.wss}/stream` });
    tradeStream.onTradeUpdate((u) => updates.push(u));
    const listening = eventPromise("listening on trade_updates", (done) => tradeStream.on("subscription", done));
    tradeStream.onConnect(() => tradeStream.subscribeTradeUpdates());
    tradeStream.connect();
    return { streams: await listening };
  },
  market_buy: async () => {
    const order = await alpaca.trading.orders.market({ symbol: "AAPL", side: "buy", qty: 2, clientOrderId: "js4-buy" });
    const fill = await waitFor("fill on the trade stream", () =>
      updates.find((u) => u.event === "fill" && u.order.id === order.id));
    return { status: order.status, fill: { event: fill.event, order_status: fill.order.status,
      client_order_id: fill.order.clientOrderId } };
  },
  position: async () => {
    const p = await alpaca.trading.positions.getOpenPosition({ symbolOrAssetId: "AAPL" });
    return { qty: String(p.qty) };
  },
  trailing_stop: async () => {
    const o = await alpaca.trading.orders.trailingStop({ symbol: "AAPL", side: "sell", qty: 2, trailPercent: 30,
      timeInForce: "gtc" });
    await alpaca.trading.orders.deleteOrderByOrderID({ orderId: o.id });
    return { type: o.type, trail_percent: String(o.trailPercent), hwm: String(o.hwm), stop_price: String(o.stopPrice) };
  },
  oco: async () => {
    const price = await alpaca.marketData.getLatestPrice("AAPL");
    const o = await alpaca.trading.orders.oco({ symbol: "AAPL", side: "sell", qty: 2, timeInForce: "gtc",
      takeProfit: { limitPrice: Number((price * 1.5).toFixed(2)) }, stopLoss: { stopPrice: Number((price * 0.5).toFixed(2)) } });
    await alpaca.trading.orders.deleteOrderByOrderID({ orderId: o.id });
    return { order_class: o.orderClass, legs: o.legs.length };
  },
  notional: async () => {
    const o = await alpaca.trading.orders.market({ symbol: "MSFT", side: "buy", notional: 100 });
    const done = await waitFor("notional fill", async () => {
      const x = await alpaca.trading.orders.getOrderByOrderID({ orderId: o.id });
      return x.status === "filled" && x;
    });
    return { notional: String(o.notional), filled_qty: String(done.filledQty) };
  },
  errors: async () => ({
    get_position: await rejected(alpaca.trading.positions.getOpenPosition({ symbolOrAssetId: "SPY" })),
    close_position: await rejected(alpaca.trading.positions.deleteOpenPosition({ symbolOrAssetId: "SPY" })),
    // A fractional DAY limit is fine (as on Alpaca); a fractional GTC one is refused.
    fractional_limit: await rejected(alpaca.trading.orders.limit({
      symbol: "AAPL", side: "buy", qty: 0.5, limitPrice: 1, timeInForce: "gtc" })),
  }),
  historical: async () => {
    const quotes = await alpaca.marketData.getStockQuotesFor("AAPL", { start, end });
    const trades = await alpaca.marketData.getStockTrades({ symbols: ["AAPL", "MSFT"], start, end });
    const page = await alpaca.marketData.stocks.stockQuotes({ symbols: "AAPL,MSFT", start, end, limit: 7 });
    return { quotes: quotes.length, trades: Object.fromEntries(Object.entries(trades).map(([s, v]) => [s, v.length])),
      page_size: Object.values(page.quotes).reduce((n, v) => n + v.length, 0), next_page_token: page.nextPageToken,
      first_quote_bid: quotes[0] && quotes[0].bidPrice };
  },
  data_stream: async () => {
    stockStream = alpaca.marketData.stockStream({ feed: "iex", url: `${venue.wss}/v2/iex` });
    const first = eventPromise("a quote on the data stream", (done) => stockStream.onQuote(done));
    stockStream.onConnect(() => stockStream.subscribeForQuotes(["AAPL"]));
    stockStream.connect();
    const q = await first;
    return { symbol: q.symbol, bid: q.bidPrice, ask: q.askPrice };
  },
  close: async () => {
    const o = await alpaca.trading.positions.deleteOpenPosition({ symbolOrAssetId: "AAPL" });
    tradeStream.disconnect();
    stockStream.disconnect();
    return { side: o.side, qty: String(o.qty) };
  },
});

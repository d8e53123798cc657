// The test shop's own code: a cart kept in sessionStorage, a two-page router on the History API,
// and a bug (an order has no coupon, and the discount reads one).

const CART = "shop.cart";

function cartItems() {
  return Number(sessionStorage.getItem(CART) || 0);
}

function render() {
  const onCheckout = location.pathname.endsWith("/checkout");
  document.getElementById("title").textContent = onCheckout ? "Checkout" : "Welcome to the test shop";
  const items = cartItems();
  document.getElementById("status").textContent = items ? `${items} item in the cart` : "Your cart is empty";
}

function addToCart() {
  sessionStorage.setItem(CART, String(cartItems() + 1));
  render();
}

function goToCheckout() {
  history.pushState({}, "", "/shop/checkout");
  render();
}

function discountOf(order) {
  return order.coupon.percent / 100;
}

function totalOf(order) {
  return order.items * 9.5 * (1 - discountOf(order));
}

function placeOrder() {
  document.getElementById("total").textContent = totalOf({ items: cartItems() }).toFixed(2);
}

document.getElementById("add").addEventListener("click", () => addToCart());
document.getElementById("checkout").addEventListener("click", () => goToCheckout());
document.getElementById("order").addEventListener("click", () => placeOrder());
render();

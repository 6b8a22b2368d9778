%% @doc The session-store behaviour, with erlmcp's callback names and
%% return shapes (apps/erlmcp_core/src/erlmcp_session_backend.erl), so a
%% backend written for erlmcp plugs into this fixture and the data each one
%% writes is the data erlmcp writes.
%%
%% Note the asymmetry copied from erlmcp: `store/3' fails with a 2-tuple
%% `{error, Reason}', while `fetch/2' and `delete/2' fail with a 3-tuple that
%% carries the state.
%%
%% Beyond erlmcp, two optional callbacks let a stateful backend (such as the
%% hybrid one used for migrations) receive the store server's stray messages
%% and be told when the server stops.
-module(erlmcp_session_backend).

-export([is_expired/2, expired_guard/2, now_ms/0]).

-export_type([session_id/0, session/0]).

-type session_id() :: binary().
-type session() :: #{id := session_id(),
                     created_at := integer(),
                     last_accessed := integer(),
                     timeout_ms := pos_integer() | infinity,
                     metadata := map()}.

-callback init(Opts :: map()) -> {ok, State :: term()} | {error, term()}.
-callback store(session_id(), session(), State :: term()) ->
    {ok, NewState :: term()} | {error, term()}.
-callback fetch(session_id(), State :: term()) ->
    {ok, session(), NewState :: term()} |
    {error, not_found | term(), NewState :: term()}.
-callback delete(session_id(), State :: term()) ->
    {ok, NewState :: term()} | {error, term(), NewState :: term()}.
-callback list(State :: term()) ->
    {ok, [session_id()], NewState :: term()} | {error, term(), NewState :: term()}.
-callback cleanup_expired(State :: term()) ->
    {ok, Count :: non_neg_integer(), NewState :: term()}.
%% Not in erlmcp: optional hooks for stateful backends.
-callback handle_info(Msg :: term(), State :: term()) -> {ok, NewState :: term()}.
-callback terminate(Reason :: term(), State :: term()) -> term().
-optional_callbacks([handle_info/2, terminate/2]).

%% @doc erlmcp's expiry rule: never for `infinity', otherwise when more than
%% `timeout_ms' has passed since `last_accessed'.
-spec is_expired(session(), integer()) -> boolean().
is_expired(#{timeout_ms := infinity}, _Now) ->
    false;
is_expired(#{last_accessed := LastAccessed, timeout_ms := TimeoutMs}, Now) ->
    Now - LastAccessed > TimeoutMs;
is_expired(_, _) ->
    false.

%% @doc A match-spec guard equal to is_expired/2 for a session bound to
%% `Var' ('$2' etc.), so expired rows are found by ets/dets/mnesia select
%% without copying every session out. `infinity' never matches because in
%% Erlang's term order every number is smaller than every atom. Sessions
%% that are not maps or lack the keys make the guard fail (never expired).
-spec expired_guard(atom(), integer()) -> tuple().
expired_guard(Var, Now) ->
    {'>', {'-', Now, {map_get, last_accessed, Var}},
     {map_get, timeout_ms, Var}}.

-spec now_ms() -> integer().
now_ms() ->
    erlang:system_time(millisecond).

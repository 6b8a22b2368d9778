%% @doc A store server shaped exactly like erlmcp's own (the gen_server in
%% erlmcp's apps/erlmcp_core/src/erlmcp_session_backend.erl), for the tests
%% and the demo to prove that migctl needs nothing more of the service
%% than that server gives:
%%
%%   * requests {store, Id, S}, {fetch, Id}, {delete, Id}, list and
%%     cleanup_expired call the backend's callbacks of the same names and
%%     match on erlmcp's return shapes only (a backend returning another
%%     shape crashes this server, as it would crash erlmcp's);
%%   * any other request is answered {error, unknown_request};
%%   * every cast, and every message but its own cleanup timer, is dropped;
%%   * the cleanup runs in the server itself, on a timer;
%%   * the server hibernates after every request, as erlmcp's does;
%%   * the backend's optional terminate/2 is never called.
%%
%% It registers under the fixture's store name, erlmcp_session_store, so
%% the fixture's clients (load generator, seeder) reach whichever server
%% runs; erlmcp_fixture starts this one instead of erlmcp_session_store when
%% the application env has {store_server, erlmcp}. The configuration is read
%% as erlmcp_session_store:config/0 reads it.
-module(erlmcp_session_server).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(NAME, erlmcp_session_store).

start_link() ->
    gen_server:start_link({local, ?NAME}, ?MODULE, [], [{hibernate_after, 30000}]).

init([]) ->
    {Backend, Opts, Interval} = erlmcp_session_store:config(),
    case Backend:init(Opts) of
        {ok, BState} ->
            {ok, #{backend => Backend, bstate => BState, interval => Interval,
                   timer => schedule(Interval)}};
        {error, Reason} ->
            {error, Reason}
    end.

handle_call({store, Id, Session}, _From, S = #{backend := B, bstate := BS}) ->
    case B:store(Id, Session, BS) of
        {ok, BS1} -> {reply, ok, S#{bstate := BS1}, hibernate};
        {error, Reason} -> {reply, {error, Reason}, S, hibernate}
    end;
handle_call({fetch, Id}, _From, S = #{backend := B, bstate := BS}) ->
    case B:fetch(Id, BS) of
        {ok, Session, BS1} -> {reply, {ok, Session}, S#{bstate := BS1}, hibernate};
        {error, not_found, BS1} -> {reply, {error, not_found}, S#{bstate := BS1}, hibernate};
        {error, Reason, BS1} -> {reply, {error, Reason}, S#{bstate := BS1}, hibernate}
    end;
handle_call({delete, Id}, _From, S = #{backend := B, bstate := BS}) ->
    case B:delete(Id, BS) of
        {ok, BS1} -> {reply, ok, S#{bstate := BS1}, hibernate};
        {error, Reason, BS1} -> {reply, {error, Reason}, S#{bstate := BS1}, hibernate}
    end;
handle_call(list, _From, S = #{backend := B, bstate := BS}) ->
    case B:list(BS) of
        {ok, Ids, BS1} -> {reply, {ok, Ids}, S#{bstate := BS1}, hibernate}
    end;
handle_call(cleanup_expired, _From, S = #{backend := B, bstate := BS}) ->
    case B:cleanup_expired(BS) of
        {ok, N, BS1} -> {reply, {ok, N}, S#{bstate := BS1}, hibernate}
    end;
handle_call(_Request, _From, S) ->
    {reply, {error, unknown_request}, S, hibernate}.

handle_cast(_Msg, S) ->
    {noreply, S, hibernate}.

handle_info(cleanup_expired, S = #{backend := B, bstate := BS, interval := I}) ->
    case B:cleanup_expired(BS) of
        {ok, _N, BS1} -> {noreply, S#{bstate := BS1, timer := schedule(I)}, hibernate}
    end;
handle_info(_Info, S) ->
    {noreply, S, hibernate}.

terminate(_Reason, #{timer := T}) ->
    is_reference(T) andalso erlang:cancel_timer(T),
    ok.

schedule(infinity) -> undefined;
schedule(I) when is_integer(I), I > 0 -> erlang:send_after(I, self(), cleanup_expired).
